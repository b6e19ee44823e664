//! Bundles on disk: the atomic writer, the checked reader and the registry
//! listing.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use prost::Message as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::manifest::{Explainer, Manifest};
use super::{
    BUNDLE_FORMAT_VERSION, BundleError, EXPLAINER_FILE, HOLDOUT_FILE, LIVE_TEMP_PREFIX,
    MANIFEST_FILE, MODEL_FILE, ModelName, REPORT_FILE, TEMP_DIR_PREFIX, check_model_name,
    check_version_name, random_u64,
};
use crate::onnx::proto::{ModelProto, tensor_proto, tensor_shape_proto, type_proto};
use crate::onnx::{INPUT_NAME, OUTPUT_NAME};

/// Everything a new bundle holds, as the training side assembles it.
#[derive(Debug, Clone)]
pub struct BundleContents {
    /// Written as `manifest.json`; its model name and version say where.
    pub manifest: Manifest,
    /// The serialised ONNX model, written as `model.onnx`.
    pub onnx: Vec<u8>,
    /// Written as `explainer.json`.
    pub explainer: Explainer,
    /// The HTML report, written as `report.html`.
    pub report_html: String,
    /// The validation rows, written as `holdout.csv`.
    pub holdout: Vec<HoldoutRow>,
    /// The profile fields each held-out row carries ([`HoldoutRow::profile`]), written as
    /// the columns `profile.<field>` after the score: what the console's conversion by
    /// field reads.
    pub holdout_fields: Vec<String>,
}

/// One validation row and its score (a line of `holdout.csv`).
#[derive(Debug, Clone, PartialEq)]
pub struct HoldoutRow {
    /// The lead's or customer's id.
    pub entity_id: String,
    /// The scoring moment (event form), as text.
    pub cutoff: Option<String>,
    /// 0 or 1.
    pub label: u8,
    /// The calibrated probability.
    pub score: f64,
    /// The entity's value of each of the bundle's held-out profile fields
    /// ([`BundleContents::holdout_fields`]), as text; empty when missing.
    pub profile: Vec<String>,
}

/// A bundle's `holdout.csv`: its rows and the profile fields they carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Holdout {
    /// The profile fields of [`HoldoutRow::profile`], in order.
    pub fields: Vec<String>,
    pub rows: Vec<HoldoutRow>,
}

/// Header line of `holdout.csv`; `profile.<field>` columns may follow.
const HOLDOUT_HEADER: &str = "entity_id,cutoff,label,score";
/// Prefix of a profile field's column in `holdout.csv`.
const HOLDOUT_PROFILE_PREFIX: &str = "profile.";

/// Writes a bundle to `<registry_root>/<model>/<version>/` (the model's name and version
/// from the manifest, see [`Manifest::name`]) and returns that directory.
///
/// Everything is checked first (manifest, explainer and ONNX input against
/// the feature plan; the holdout rows as they are written). The files are
/// written and synced into `<registry_root>/<model>/.tmp-<version>-<random>`
/// with the manifest last, the directory is synced, then renamed into place
/// and the model directory synced. On any error the temporary directory is
/// removed. An existing `<version>` (even an empty directory or a file) is
/// never replaced: [`BundleError::AlreadyExists`]. (Should only the final
/// sync of the model directory fail, the bundle is already in place and
/// loads; the error is still returned since it may not survive a crash.)
pub fn write_bundle(
    registry_root: &Path,
    contents: &BundleContents,
) -> Result<PathBuf, BundleError> {
    let manifest = &contents.manifest;
    let model_dir = registry_root.join(manifest.name().as_str());
    check_version_name(&manifest.version).map_err(|e| BundleError::invalid(&model_dir, e))?;
    let target = model_dir.join(&manifest.version);
    check_contents(&target, contents)?;
    let manifest_json = to_checked_json::<Manifest>(&target.join(MANIFEST_FILE), manifest)?;
    let explainer_json =
        to_checked_json::<Explainer>(&target.join(EXPLAINER_FILE), &contents.explainer)?;

    fs::create_dir_all(&model_dir).map_err(|e| BundleError::io(&model_dir, e))?;
    if exists(&target)? {
        return Err(BundleError::AlreadyExists { path: target });
    }
    let tmp = TempDir::create(&model_dir, &manifest.version)?;
    write_file(&tmp.path.join(MODEL_FILE), |w| {
        Ok(w.write_all(&contents.onnx)?)
    })?;
    write_file(&tmp.path.join(EXPLAINER_FILE), |w| {
        Ok(w.write_all(&explainer_json)?)
    })?;
    write_file(&tmp.path.join(REPORT_FILE), |w| {
        Ok(w.write_all(contents.report_html.as_bytes())?)
    })?;
    write_file(&tmp.path.join(HOLDOUT_FILE), |w| {
        write_holdout(
            w,
            &contents.holdout,
            &contents.holdout_fields,
            &target.join(HOLDOUT_FILE),
        )
    })?;
    // Last, so that even a directory that escaped the rename is only ever
    // read as a bundle once it is complete.
    write_file(&tmp.path.join(MANIFEST_FILE), |w| {
        Ok(w.write_all(&manifest_json)?)
    })?;
    sync_dir(&tmp.path)?;
    publish(&tmp.path, &target)?;
    tmp.disarm();
    sync_dir(&model_dir)?;
    Ok(target)
}

/// Moves the complete temporary directory to `target`, refusing to replace
/// anything. A plain `rename` would replace an empty directory, so the
/// target is first claimed by creating it (which fails if anything of that
/// name exists), and the rename then replaces only that empty claim. A
/// reader may see the empty claim for an instant; it has no manifest, so
/// [`Registry::versions`] skips it.
fn publish(tmp: &Path, target: &Path) -> Result<(), BundleError> {
    match fs::create_dir(target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(BundleError::AlreadyExists {
                path: target.to_path_buf(),
            });
        }
        Err(e) => return Err(BundleError::io(target, e)),
    }
    if let Err(e) = fs::rename(tmp, target) {
        // Removes the claim only while it is still empty.
        let _ = fs::remove_dir(target);
        return Err(match e.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty => {
                BundleError::AlreadyExists {
                    path: target.to_path_buf(),
                }
            }
            _ => BundleError::io(tmp, e),
        });
    }
    Ok(())
}

/// The checks both the writer and the reader make, for a bundle at `dir`.
fn check_contents(dir: &Path, contents: &BundleContents) -> Result<(), BundleError> {
    let manifest = &contents.manifest;
    manifest
        .check()
        .map_err(|e| BundleError::invalid(&dir.join(MANIFEST_FILE), e))?;
    check_explainer(&dir.join(EXPLAINER_FILE), &contents.explainer, manifest)?;
    check_model_digest(&dir.join(MODEL_FILE), &contents.onnx, manifest)?;
    check_onnx(&dir.join(MODEL_FILE), &contents.onnx, manifest.n_features())
}

/// `model.onnx`'s SHA-256 against the manifest's `model_sha256`, when it has one.
fn check_model_digest(path: &Path, bytes: &[u8], manifest: &Manifest) -> Result<(), BundleError> {
    let Some(expected) = &manifest.model_sha256 else {
        return Ok(());
    };
    let found = super::sha256_hex(bytes);
    if &found != expected {
        return Err(BundleError::invalid(
            path,
            format!(
                "SHA-256 is {found}, the manifest's `model_sha256` is {expected}: the file \
                 changed after training (damaged, or copied in part)"
            ),
        ));
    }
    Ok(())
}

fn check_explainer(
    path: &Path,
    explainer: &Explainer,
    manifest: &Manifest,
) -> Result<(), BundleError> {
    explainer
        .check(manifest.n_features())
        .map_err(|e| BundleError::invalid(path, e))?;
    if explainer.kind() != manifest.explanation {
        return Err(BundleError::invalid(
            path,
            format!(
                "holds {:?} data, the manifest says the explanation is {:?}",
                explainer.kind(),
                manifest.explanation
            ),
        ));
    }
    Ok(())
}

fn check_onnx(path: &Path, bytes: &[u8], n_features: usize) -> Result<(), BundleError> {
    if bytes.is_empty() {
        return Err(BundleError::invalid(path, "is empty"));
    }
    let model = ModelProto::decode(bytes).map_err(|e| BundleError::Corrupt {
        path: path.to_path_buf(),
        message: format!("not an ONNX model: {e}"),
    })?;
    let width = input_width(&model).map_err(|e| BundleError::invalid(path, e))?;
    if width != n_features {
        return Err(BundleError::invalid(
            path,
            format!(
                "input `{INPUT_NAME}` is float32[N, {width}], the manifest has {n_features} features"
            ),
        ));
    }
    Ok(())
}

/// The width `F` of an ONNX model's `float32[N, F]` input [`INPUT_NAME`];
/// also checks that the graph has the output [`OUTPUT_NAME`].
pub fn onnx_input_width(onnx: &[u8]) -> Result<usize, String> {
    let model = ModelProto::decode(onnx).map_err(|e| format!("not an ONNX model: {e}"))?;
    input_width(&model)
}

fn input_width(model: &ModelProto) -> Result<usize, String> {
    let graph = model.graph.as_ref().ok_or("the model has no graph")?;
    let Some(input) = graph.input.iter().find(|i| i.name() == INPUT_NAME) else {
        let names: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
        return Err(format!(
            "no input named `{INPUT_NAME}` (inputs: {})",
            names.join(", ")
        ));
    };
    if !graph.output.iter().any(|o| o.name() == OUTPUT_NAME) {
        return Err(format!("no output named `{OUTPUT_NAME}`"));
    }
    let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(tensor)) => tensor,
        _ => return Err(format!("input `{INPUT_NAME}` is not a tensor")),
    };
    if tensor.elem_type != Some(tensor_proto::DataType::Float as i32) {
        return Err(format!("input `{INPUT_NAME}` is not float32"));
    }
    let dims = tensor
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or(&[]);
    match dims {
        [
            _,
            tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(width)),
                ..
            },
        ] if *width > 0 => usize::try_from(*width).map_err(|_| format!("width {width} too large")),
        _ => Err(format!(
            "input `{INPUT_NAME}` does not have the shape [N, F] with a fixed F > 0"
        )),
    }
}

/// Serialises to pretty JSON and reads it back, so that what is written is
/// what a reader will accept (a `NaN` in a metric, for instance, would be
/// written as `null` and then fail to read).
fn to_checked_json<T: serde::Serialize + DeserializeOwned>(
    path: &Path,
    value: &T,
) -> Result<Vec<u8>, BundleError> {
    let mut json = serde_json::to_vec_pretty(value)
        .map_err(|e| BundleError::invalid(path, format!("cannot be serialised: {e}")))?;
    json.push(b'\n');
    serde_json::from_slice::<T>(&json).map_err(|e| {
        BundleError::invalid(
            path,
            format!("would not read back ({e}); is a number not finite?"),
        )
    })?;
    Ok(json)
}

/// Writes the holdout rows as CSV, checking each one (`named` is the file
/// the errors name).
fn write_holdout(
    w: &mut impl Write,
    rows: &[HoldoutRow],
    fields: &[String],
    named: &Path,
) -> Result<(), WriteError> {
    w.write_all(HOLDOUT_HEADER.as_bytes())?;
    for field in fields {
        w.write_all(b",")?;
        write_csv_field(w, &format!("{HOLDOUT_PROFILE_PREFIX}{field}"))?;
    }
    writeln!(w)?;
    for (i, row) in rows.iter().enumerate() {
        if row.profile.len() != fields.len() {
            return Err(WriteError::Bundle(BundleError::invalid(
                named,
                format!(
                    "row {}: {} profile values for {} profile fields",
                    i + 1,
                    row.profile.len(),
                    fields.len()
                ),
            )));
        }
        if row.label > 1 {
            return Err(WriteError::Bundle(BundleError::invalid(
                named,
                format!("row {}: label {} is not 0 or 1", i + 1, row.label),
            )));
        }
        if !(0.0..=1.0).contains(&row.score) {
            return Err(WriteError::Bundle(BundleError::invalid(
                named,
                format!("row {}: score {} is not a probability", i + 1, row.score),
            )));
        }
        write_csv_field(w, &row.entity_id)?;
        w.write_all(b",")?;
        write_csv_field(w, row.cutoff.as_deref().unwrap_or(""))?;
        write!(w, ",{},{}", row.label, row.score)?;
        for value in &row.profile {
            w.write_all(b",")?;
            write_csv_field(w, value)?;
        }
        writeln!(w)?;
    }
    Ok(())
}

/// RFC 4180: a field with a comma, quote or line break is quoted, quotes
/// doubled.
fn write_csv_field(w: &mut impl Write, field: &str) -> io::Result<()> {
    if field.contains([',', '"', '\n', '\r']) {
        write!(w, "\"{}\"", field.replace('"', "\"\""))
    } else {
        w.write_all(field.as_bytes())
    }
}

/// An error inside [`write_file`]'s closure: an I/O error (named with the
/// file there) or a content error already naming its file.
enum WriteError {
    Io(io::Error),
    Bundle(BundleError),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Creates `path`, lets `fill` write it, flushes and syncs it.
fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<(), WriteError>,
) -> Result<(), BundleError> {
    let io_err = |e| BundleError::io(path, e);
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err)?;
    let mut w = BufWriter::new(file);
    fill(&mut w).map_err(|e| match e {
        WriteError::Io(e) => io_err(e),
        WriteError::Bundle(e) => e,
    })?;
    let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)
}

/// Syncs a directory's entries to disk (a no-op where directories cannot be
/// opened as files).
pub(super) fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| BundleError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Whether anything (file, directory, dangling link) is at `path`.
fn exists(path: &Path) -> Result<bool, BundleError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(BundleError::io(path, e)),
    }
}

/// A temporary directory removed (with its content) when dropped, unless
/// disarmed after it has been renamed into place.
struct TempDir {
    path: PathBuf,
    armed: bool,
}

impl TempDir {
    fn create(model_dir: &Path, version: &str) -> Result<TempDir, BundleError> {
        let mut last = None;
        for _ in 0..8 {
            let name = format!(
                "{TEMP_DIR_PREFIX}{version}-{:012x}",
                random_u64() & 0xffff_ffff_ffff
            );
            let path = model_dir.join(name);
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path, armed: true }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((path, e)),
                Err(e) => return Err(BundleError::io(&path, e)),
            }
        }
        let (path, e) = last.unwrap_or_else(|| {
            (
                model_dir.to_path_buf(),
                io::Error::other("no temporary directory name"),
            )
        });
        Err(BundleError::io(&path, e))
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes what interrupted writes left in `<registry_root>/<model>/`:
/// temporary `.tmp-*` directories, `.tmp-live-*` files (a promotion killed
/// between writing the new `LIVE` and renaming it), and empty version
/// directories (a claim the writer made just before its final rename), when nothing in them
/// changed for `older_than`. Returns what it removed. Pick `older_than`
/// well above the time a bundle takes to write (an hour, say): a writer
/// whose temporary directory is removed fails, it never leaves half a
/// bundle. Complete bundles are never touched.
pub fn clean_stale_temp_dirs(
    registry_root: &Path,
    model: &ModelName,
    older_than: Duration,
) -> Result<Vec<PathBuf>, BundleError> {
    let model_dir = registry_root.join(model.as_str());
    let entries = match fs::read_dir(&model_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BundleError::io(&model_dir, e)),
    };
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BundleError::io(&model_dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // Not following links: a link is never removed.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() && name.starts_with(LIVE_TEMP_PREFIX) {
            let changed = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if now.duration_since(changed).unwrap_or(Duration::ZERO) >= older_than {
                match fs::remove_file(&path) {
                    Ok(()) => removed.push(path),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(BundleError::io(&path, e)),
                }
            }
            continue;
        }
        if !meta.is_dir() {
            continue;
        }
        let temp = name.starts_with(TEMP_DIR_PREFIX);
        let claim = check_version_name(&name).is_ok() && is_empty_dir(&path);
        if !(temp || claim) {
            continue;
        }
        let changed = last_change(&path, &meta);
        if now.duration_since(changed).unwrap_or(Duration::ZERO) < older_than {
            continue;
        }
        let result = if temp {
            fs::remove_dir_all(&path)
        } else {
            // Fails, and is skipped, if a bundle appeared meanwhile.
            fs::remove_dir(&path)
        };
        match result {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound || !temp => {}
            Err(e) => return Err(BundleError::io(&path, e)),
        }
    }
    removed.sort();
    Ok(removed)
}

fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(false)
}

/// The latest modification time of a directory and the entries in it.
fn last_change(dir: &Path, meta: &fs::Metadata) -> SystemTime {
    let mut latest = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                latest = latest.max(modified);
            }
        }
    }
    latest
}

/// A bundle read back and checked. The report and the holdout file are not
/// loaded; their paths are at hand.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
    explainer: Explainer,
    onnx: Vec<u8>,
}

#[derive(Deserialize)]
struct FormatProbe {
    format_version: Option<u64>,
}

impl Bundle {
    /// Reads the bundle in `dir` (`<registry>/<model>/<version>`) and checks
    /// it: the manifest's format version (before anything else in it), its
    /// content ([`Manifest::check`]), its model name and version against the
    /// folder names, the explainer against the features, `model.onnx`
    /// against the manifest's SHA-256 (when it has one: older bundles do not;
    /// see [`Bundle::has_model_digest`]), and that `model.onnx` is an ONNX
    /// model whose input width is the number of features. Errors name the
    /// file and the problem.
    pub fn load(dir: &Path) -> Result<Bundle, BundleError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = parse_manifest(&manifest_path, &read(&manifest_path)?)?;
        manifest
            .check()
            .map_err(|e| BundleError::invalid(&manifest_path, e))?;
        check_folder(dir, &manifest_path, &manifest)?;

        let explainer_path = dir.join(EXPLAINER_FILE);
        let explainer: Explainer = parse_json(&explainer_path, &read(&explainer_path)?)?;
        check_explainer(&explainer_path, &explainer, &manifest)?;

        let model_path = dir.join(MODEL_FILE);
        let onnx = read(&model_path)?;
        check_model_digest(&model_path, &onnx, &manifest)?;
        check_onnx(&model_path, &onnx, manifest.n_features())?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            explainer,
            onnx,
        })
    }

    /// The directory it was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The explainer.
    pub fn explainer(&self) -> &Explainer {
        &self.explainer
    }

    /// Whether `model.onnx` was checked against a SHA-256 in the manifest (bundles
    /// made before the manifest stored one were not).
    pub fn has_model_digest(&self) -> bool {
        self.manifest.model_sha256.is_some()
    }

    /// The bytes of `model.onnx`.
    pub fn onnx_bytes(&self) -> &[u8] {
        &self.onnx
    }

    /// Path of `model.onnx`.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// Path of `report.html`.
    pub fn report_path(&self) -> PathBuf {
        self.dir.join(REPORT_FILE)
    }

    /// Path of `holdout.csv`.
    pub fn holdout_path(&self) -> PathBuf {
        self.dir.join(HOLDOUT_FILE)
    }

    /// The held-out rows of `holdout.csv`, or `None` when the bundle has no such file (it
    /// is not needed to serve; capacity questions need it).
    pub fn read_holdout(&self) -> Result<Option<Vec<HoldoutRow>>, BundleError> {
        Ok(self.read_holdout_table()?.map(|h| h.rows))
    }

    /// `holdout.csv` with the profile fields its rows carry (none in bundles written
    /// before they were kept), or `None` when the bundle has no such file.
    pub fn read_holdout_table(&self) -> Result<Option<Holdout>, BundleError> {
        let path = self.holdout_path();
        match read(&path) {
            Ok(bytes) => parse_holdout(&path, &bytes).map(Some),
            Err(BundleError::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Parses `holdout.csv` as [`write_holdout`] writes it (RFC 4180 quoting); errors name the
/// line.
fn parse_holdout(path: &Path, bytes: &[u8]) -> Result<Holdout, BundleError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| BundleError::invalid(path, format!("not UTF-8: {e}")))?;
    let records = parse_csv(text)
        .map_err(|(line, message)| BundleError::invalid(path, format!("line {line}: {message}")))?;
    let mut records = records.into_iter();
    let header_error = || {
        BundleError::invalid(
            path,
            format!(
                "line 1: the header must be `{HOLDOUT_HEADER}`, then \
                 `{HOLDOUT_PROFILE_PREFIX}<field>` columns"
            ),
        )
    };
    let fields: Vec<String> = match records.next() {
        Some((_, header)) if header.len() >= 4 && header[..4].join(",") == HOLDOUT_HEADER => header
            [4..]
            .iter()
            .map(|c| {
                c.strip_prefix(HOLDOUT_PROFILE_PREFIX)
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(header_error)
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(header_error()),
    };
    let width = 4 + fields.len();
    let rows = records
        .map(|(line, mut fields)| {
            let bad =
                |message: String| BundleError::invalid(path, format!("line {line}: {message}"));
            if fields.len() != width {
                return Err(bad(format!("{} fields, expected {width}", fields.len())));
            }
            let profile = fields.split_off(4);
            let [entity_id, cutoff, label, score]: [String; 4] = fields
                .try_into()
                .map_err(|f: Vec<String>| bad(format!("{} fields, expected {width}", f.len())))?;
            let label = match label.as_str() {
                "0" => 0,
                "1" => 1,
                other => return Err(bad(format!("label `{other}` is not 0 or 1"))),
            };
            let score: f64 = score
                .parse()
                .ok()
                .filter(|s| (0.0..=1.0).contains(s))
                .ok_or_else(|| bad(format!("score `{score}` is not a probability")))?;
            Ok(HoldoutRow {
                entity_id,
                cutoff: (!cutoff.is_empty()).then_some(cutoff),
                label,
                score,
                profile,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Holdout { fields, rows })
}

/// A CSV record's fields and the line it starts on.
type CsvRecord = (usize, Vec<String>);

/// RFC 4180 records of `text` with the line each starts on; a final line break is optional
/// and blank lines are skipped. Errors give the line and the problem.
fn parse_csv(text: &str) -> Result<Vec<CsvRecord>, (usize, String)> {
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut start = 1;
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            '"' => return Err((line, "a quote inside an unquoted field".into())),
            ',' => fields.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].is_empty()) {
                    records.push((start, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                start = line;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err((start, "a quoted field is not closed".into()));
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        records.push((start, fields));
    }
    Ok(records)
}

fn read(path: &Path) -> Result<Vec<u8>, BundleError> {
    fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => BundleError::Missing {
            path: path.to_path_buf(),
        },
        _ => BundleError::io(path, e),
    })
}

fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, BundleError> {
    serde_json::from_slice(bytes).map_err(|e| BundleError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads the format version first, so that a manifest of another format
/// is reported as such rather than as whatever field it no longer matches.
fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Manifest, BundleError> {
    let probe: FormatProbe = parse_json(path, bytes)?;
    match probe.format_version {
        None => Err(BundleError::Corrupt {
            path: path.to_path_buf(),
            message: "no `format_version`: not a bundle manifest".into(),
        }),
        Some(found) if found != u64::from(BUNDLE_FORMAT_VERSION) => {
            Err(BundleError::UnsupportedFormat {
                path: path.to_path_buf(),
                found,
                supported: BUNDLE_FORMAT_VERSION,
            })
        }
        Some(_) => parse_json(path, bytes),
    }
}

/// The manifest's model name and version must be the bundle's folder names
/// (after resolving links, so a link to a version folder loads).
fn check_folder(dir: &Path, manifest_path: &Path, manifest: &Manifest) -> Result<(), BundleError> {
    let real = fs::canonicalize(dir).map_err(|e| BundleError::io(dir, e))?;
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let version = name(Some(&real));
    let folder = name(real.parent());
    if version != manifest.version {
        return Err(BundleError::invalid(
            manifest_path,
            format!(
                "version is {:?} but the bundle's folder is {version:?}",
                manifest.version
            ),
        ));
    }
    let model = manifest.name();
    if folder != model.as_str() {
        let named = if manifest.model.is_some() {
            format!("the model's name is {model}")
        } else {
            format!("the model's name is {model} (its task's: the manifest names no model)")
        };
        return Err(BundleError::invalid(
            manifest_path,
            format!("{named} but the bundle is in the folder {folder:?}"),
        ));
    }
    Ok(())
}

/// The registry folder: `<root>/<model>/<version>/` bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// The registry at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Registry { root: root.into() }
    }

    /// Its root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<model>`.
    pub fn model_dir(&self, model: &ModelName) -> PathBuf {
        self.root.join(model.as_str())
    }

    /// The models of the registry, sorted by name: its folders whose name is a model name
    /// (hidden entries, files and other names are skipped; a folder may hold no version
    /// yet). No registry folder: no models.
    pub fn models(&self) -> Result<Vec<ModelName>, BundleError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BundleError::io(&self.root, e)),
        };
        let mut models: Vec<ModelName> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_owned();
                check_model_name(&name).ok()?;
                entry.path().is_dir().then(|| ModelName::new(&name).ok())?
            })
            .collect();
        models.sort();
        Ok(models)
    }

    /// The versions of `model` that are complete bundles, sorted by name
    /// (which is by creation time for [`new_version_name`](super::new_version_name)
    /// names): directories with a valid version name and a manifest.
    /// Temporary `.tmp-*` directories, hidden and unreadable entries, files
    /// and empty directories are skipped. No model folder: no versions.
    pub fn versions(&self, model: &ModelName) -> Result<Vec<String>, BundleError> {
        let model_dir = self.model_dir(model);
        let entries = match fs::read_dir(&model_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BundleError::io(&model_dir, e)),
        };
        let mut versions: Vec<String> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_owned();
                check_version_name(&name).ok()?;
                let path = entry.path();
                (path.is_dir() && path.join(MANIFEST_FILE).is_file()).then_some(name)
            })
            .collect();
        versions.sort();
        Ok(versions)
    }

    /// The last of [`Registry::versions`], if any.
    pub fn latest(&self, model: &ModelName) -> Result<Option<String>, BundleError> {
        Ok(self.versions(model)?.pop())
    }

    /// [`Bundle::load`] of `<root>/<model>/<version>`.
    pub fn load(&self, model: &ModelName, version: &str) -> Result<Bundle, BundleError> {
        let model_dir = self.model_dir(model);
        check_version_name(version).map_err(|e| BundleError::invalid(&model_dir, e))?;
        Bundle::load(&model_dir.join(version))
    }

    /// [`write_bundle`] into this registry.
    pub fn write(&self, contents: &BundleContents) -> Result<PathBuf, BundleError> {
        write_bundle(&self.root, contents)
    }
}
