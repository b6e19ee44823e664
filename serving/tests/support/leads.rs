//! Lead profiles the fixture registry's propensity model scores far apart: the strong one is
//! sales-ready at once, the weak one climbs the grades with its events and stays below the
//! sales-ready line (the webhook and replica tests make transitions with them).
#![allow(dead_code)]

use serde_json::{Value, json};

pub fn profile(strong: bool) -> Value {
    if strong {
        json!({"industry": "Software", "employee_band": "51-200", "country": "Germany",
               "job_title": "VP Marketing", "seniority": "VP", "lead_source": "referral",
               "annual_revenue_musd": 12.5})
    } else {
        json!({"industry": "Retail", "employee_band": "1-10", "country": "France",
               "job_title": "Analyst", "seniority": "Individual", "lead_source": "webinar",
               "annual_revenue_musd": 0.5})
    }
}
