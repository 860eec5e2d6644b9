//! Pipeline packages and specs, as pipeline versions take them.
//!
//! A package is what the kfp compiler writes: a YAML (or JSON) document holding the pipeline
//! spec, optionally followed by more documents holding the platform spec (Kubernetes settings).
//! A version keeps it as one Struct: the pipeline spec itself, or, with a platform spec,
//! `{"pipeline_spec": ..., "platform_spec": ...}` (what KFP returns as a version's
//! pipeline_spec). Archives (.zip, .tar.gz) are refused: runledger takes the YAML itself.
//!
//! A pipeline spec is checked as KFP checks one before storing it: a mapping of PipelineSpec's
//! fields (camelCase or snake_case, as protobuf's JSON form allows), with a `root` and a
//! `pipelineInfo.name` that ML Metadata accepts (`[a-z0-9][a-z0-9-]{0,127}`). Its insides
//! (components, DAG) are kept as they are.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::wkt::StructBytes;

/// A spec that passed the checks: as a version keeps it, and the pipeline's name in it.
#[derive(Debug, Clone)]
pub struct CheckedSpec {
    pub spec: StructBytes,
    pub pipeline_name: String,
}

/// The fields of PipelineSpec, in both spellings.
const SPEC_FIELDS: &[(&str, &str)] = &[
    ("pipelineInfo", "pipeline_info"),
    ("root", "root"),
    ("components", "components"),
    ("deploymentSpec", "deployment_spec"),
    ("schemaVersion", "schema_version"),
    ("sdkVersion", "sdk_version"),
    ("defaultPipelineRoot", "default_pipeline_root"),
];

/// Reads a package (the bytes of an uploaded file) into a checked spec.
pub fn read_package(bytes: &[u8]) -> Result<CheckedSpec> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(&[0x1f, 0x8b]) {
        return Err(Error::invalid(
            "the package is an archive (.zip or .tar.gz); upload the pipeline YAML (or JSON) \
             that the kfp compiler wrote, e.g. the pipeline.yaml inside it",
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::invalid(format!(
            "the package is not UTF-8 text ({e}); upload the pipeline YAML or JSON"
        ))
    })?;
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(document)
            .map_err(|e| Error::invalid(format!("the package is not valid YAML or JSON: {e}")))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let mut documents = documents.into_iter();
    let spec = documents
        .next()
        .ok_or_else(|| Error::invalid("the package is empty: it holds no pipeline spec"))?;
    // Every later document adds to the platform spec, as the kfp SDK reads a package.
    let mut platform = Map::new();
    for document in documents {
        match document {
            Value::Object(fields) => platform.extend(fields),
            _ => {
                return Err(Error::invalid(
                    "a document after the pipeline spec must be a mapping (the platform spec)",
                ));
            }
        }
    }
    let whole = if platform.is_empty() {
        spec
    } else {
        Value::Object(Map::from_iter([
            ("pipeline_spec".to_owned(), spec),
            ("platform_spec".to_owned(), Value::Object(platform)),
        ]))
    };
    check_value(&whole)
}

/// Checks a spec sent as a Struct (a version created through the API).
pub fn check_struct(spec: &StructBytes) -> Result<CheckedSpec> {
    super::validate::check_struct_bytes("pipeline_version.pipeline_spec", spec)?;
    let tree = spec.to_struct().map_err(|e| {
        Error::invalid(format!(
            "pipeline_version.pipeline_spec cannot be read: {e}"
        ))
    })?;
    let value = serde_json::to_value(&tree)
        .map_err(|e| Error::invalid(format!("pipeline_version.pipeline_spec: {e}")))?;
    let name = pipeline_name(&value)?;
    Ok(CheckedSpec {
        spec: spec.clone(),
        pipeline_name: name,
    })
}

fn check_value(value: &Value) -> Result<CheckedSpec> {
    let pipeline_name = pipeline_name(value)?;
    let tree: pbjson_types::Struct = serde_json::from_value(value.clone()).map_err(|e| {
        Error::invalid(format!("the pipeline spec cannot be kept as a Struct: {e}"))
    })?;
    let spec = StructBytes::from(&tree);
    spec.validate()
        .map_err(|e| Error::invalid(format!("the pipeline spec is too deep to keep: {e}")))?;
    Ok(CheckedSpec {
        spec,
        pipeline_name,
    })
}

/// Checks the whole (a spec, or a spec with its platform spec); returns the pipeline's name.
fn pipeline_name(value: &Value) -> Result<String> {
    let Value::Object(top) = value else {
        return Err(invalid("it must be a mapping of PipelineSpec fields"));
    };
    let spec = match (top.get("pipeline_spec"), top.get("platform_spec")) {
        (Some(spec), Some(platform)) if top.len() == 2 => {
            if !platform.is_object() {
                return Err(invalid("platform_spec must be a mapping"));
            }
            spec
        }
        _ => value,
    };
    let Value::Object(fields) = spec else {
        return Err(invalid(
            "pipeline_spec must be a mapping of PipelineSpec fields",
        ));
    };
    for key in fields.keys() {
        if !SPEC_FIELDS.iter().any(|(a, b)| key == a || key == b) {
            let known: Vec<&str> = SPEC_FIELDS.iter().map(|(a, _)| *a).collect();
            return Err(invalid(&format!(
                "unknown field {key:?}; a compiled pipeline has {}",
                known.join(", ")
            )));
        }
    }
    let get = |camel: &str| {
        let snake = SPEC_FIELDS
            .iter()
            .find(|(a, _)| *a == camel)
            .map_or(camel, |(_, b)| b);
        fields.get(camel).or_else(|| fields.get(snake))
    };
    for field in ["root", "components", "deploymentSpec"] {
        if let Some(v) = get(field)
            && !v.is_object()
        {
            return Err(invalid(&format!("{field} must be a mapping")));
        }
    }
    for field in ["schemaVersion", "sdkVersion", "defaultPipelineRoot"] {
        if let Some(v) = get(field)
            && !v.is_string()
        {
            return Err(invalid(&format!("{field} must be a string")));
        }
    }
    if get("root").is_none() {
        return Err(invalid("root (the pipeline's DAG) is missing"));
    }
    let name = get("pipelineInfo")
        .and_then(|info| info.get("name"))
        .ok_or_else(|| invalid("pipelineInfo.name is missing"))?;
    let Some(name) = name.as_str() else {
        return Err(invalid("pipelineInfo.name must be a string"));
    };
    check_pipeline_name(name).map_err(|e| invalid(&format!("pipelineInfo.name: {e}")))?;
    Ok(name.to_owned())
}

/// The names ML Metadata accepts for a pipeline: `[a-z0-9][a-z0-9-]{0,127}`.
fn check_pipeline_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if first && rest && name.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid pipeline name: 1 to 128 lowercase letters, digits or '-', \
             starting with a letter or digit"
        ))
    }
}

fn invalid(what: &str) -> Error {
    Error::invalid(format!("not a valid pipeline spec: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "\
pipelineInfo:
  name: my-pipeline
root:
  dag:
    tasks: {}
schemaVersion: 2.1.0
sdkVersion: kfp-2.17.3
";

    #[test]
    fn a_yaml_package_becomes_its_spec() {
        let checked = read_package(SPEC.as_bytes()).unwrap();
        assert_eq!(checked.pipeline_name, "my-pipeline");
        let json = serde_json::to_value(&checked.spec).unwrap();
        assert_eq!(json["root"]["dag"]["tasks"], serde_json::json!({}));
        assert_eq!(json["schemaVersion"], "2.1.0");
    }

    #[test]
    fn a_json_package_is_read_the_same() {
        let json = r#"{"pipelineInfo": {"name": "p"}, "root": {"dag": {}}}"#;
        assert_eq!(read_package(json.as_bytes()).unwrap().pipeline_name, "p");
    }

    #[test]
    fn a_platform_spec_document_is_kept_beside_the_spec() {
        let package = format!("{SPEC}---\nplatforms:\n  kubernetes: {{}}\n");
        let checked = read_package(package.as_bytes()).unwrap();
        let json = serde_json::to_value(&checked.spec).unwrap();
        assert_eq!(json["pipeline_spec"]["pipelineInfo"]["name"], "my-pipeline");
        assert_eq!(
            json["platform_spec"]["platforms"]["kubernetes"],
            serde_json::json!({})
        );
        // And such a spec, sent back through the API, passes again.
        assert_eq!(
            check_struct(&checked.spec).unwrap().pipeline_name,
            "my-pipeline"
        );
    }

    #[test]
    fn bad_packages_say_what_is_wrong() {
        for (package, needle) in [
            (&b"PK\x03\x04rest"[..], "archive"),
            (&[0x1f, 0x8b, 8, 0][..], "archive"),
            (&[0xff, 0xfe][..], "not UTF-8"),
            (b"", "empty"),
            (b"a: [1, 2", "not valid YAML"),
            (b"- 1\n- 2\n", "mapping of PipelineSpec fields"),
            (b"root: {}\n", "pipelineInfo.name is missing"),
            (b"pipelineInfo: {name: p}\n", "root"),
            (
                b"pipelineInfo: {name: My_Pipeline}\nroot: {}\n",
                "not a valid pipeline name",
            ),
            (b"pipelineInfo: {name: 7}\nroot: {}\n", "must be a string"),
            (
                b"pipelineInfo: {name: p}\nroot: []\n",
                "root must be a mapping",
            ),
            (
                b"pipelineInfo: {name: p}\nroot: {}\nextra: 1\n",
                "unknown field \"extra\"",
            ),
            (
                b"pipelineInfo: {name: p}\nroot: {}\n---\n- x\n",
                "platform spec",
            ),
        ] {
            let err = read_package(package).expect_err(needle);
            assert!(err.message().contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn snake_case_fields_are_accepted() {
        let json = r#"{"pipeline_info": {"name": "p"}, "root": {}, "deployment_spec": {}}"#;
        assert_eq!(read_package(json.as_bytes()).unwrap().pipeline_name, "p");
    }
}
