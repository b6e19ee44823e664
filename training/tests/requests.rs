//! Score requests written for a dataset's entities: what the server's score route takes, at
//! the moment the spec scores them, with nothing from after it.

use features::builder::{Cutoffs, resolve_cutoffs};
use features::load::load_dataset;
use features::spec::DatasetSpec;
use features::synthetic::{GeneratorParams, SyntheticKind};
use serving::request::EntityRequest;
use training::requests::score_requests;

#[test]
fn requests_are_point_in_time_and_parse_as_the_servers_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = GeneratorParams {
        kind: SyntheticKind::Leads,
        entities: 600,
        seed: 5,
        ..GeneratorParams::default()
    }
    .generate(dir.path())
    .expect("generate");
    let spec = DatasetSpec::from_file(&generated.spec_path).expect("spec");
    let data = load_dataset(&spec).expect("load");
    let cutoffs = resolve_cutoffs(&data).expect("cutoffs");
    let Cutoffs::Calendar(dates) = &cutoffs else {
        panic!("the generator's leads are scored at calendar cut-offs");
    };
    let last = *dates.last().expect("a cut-off");
    let requests = score_requests(&data, &cutoffs, 25).expect("requests");
    assert_eq!(requests.len(), 25);
    let mut with_events = 0;
    for request in &requests {
        assert_eq!(request["as_of"], last, "{request}");
        assert!(request["created_at"].as_i64().expect("created") < last);
        let times: Vec<i64> = request["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["ts"].as_i64().expect("ts"))
            .collect();
        assert!(
            times.iter().all(|&t| t < last),
            "an event after the cut-off"
        );
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "events in time order"
        );
        with_events += usize::from(!times.is_empty());
        assert!(!request["profile"].as_object().expect("profile").is_empty());
        // The server's own request type takes it as is (it refuses unknown fields).
        let parsed: EntityRequest = serde_json::from_value(request.clone()).expect("parses");
        assert!(parsed.id.is_some() && parsed.row.is_none());
    }
    assert!(with_events > 10, "{with_events} of 25 have events");
    // Spread over the dataset: not just its first entities.
    let ids: Vec<&str> = requests
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] != w[1]));
}
