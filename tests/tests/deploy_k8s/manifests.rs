//! The rendered manifests: YAML documents as JSON values, and the helpers
//! that read fields, labels and quantities out of them.

use super::*;

/// Splits a multi-document YAML stream (as kubectl prints it) into objects.
pub(crate) fn parse_docs(yaml: &str) -> Vec<Value> {
    let mut docs = vec![];
    let mut current = String::new();
    for line in yaml.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                let doc: Value = serde_yaml::from_str(&current)
                    .unwrap_or_else(|e| panic!("unparsable YAML document: {e}\n{current}"));
                if !doc.is_null() {
                    docs.push(doc);
                }
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

pub(crate) fn kind(v: &Value) -> &str {
    str_at(v, "/kind").unwrap_or_default()
}

pub(crate) fn name(v: &Value) -> &str {
    str_at(v, "/metadata/name").unwrap_or_default()
}

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

pub(crate) fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub(crate) fn labels_at(v: &Value, pointer: &str) -> BTreeMap<String, String> {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), scalar(v)))
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default()
}

/// A YAML scalar as Kubernetes would read it into a string.
pub(crate) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn subset(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A resource quantity in base units (cores, bytes).
pub(crate) fn quantity(v: &Value) -> Option<f64> {
    if let Some(n) = v.as_f64() {
        return Some(n);
    }
    let s = v.as_str()?;
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, scale) in SUFFIXES {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    s.parse().ok()
}

pub(crate) struct Rendered {
    pub(crate) name: &'static str,
    pub(crate) flavour: Flavour,
    pub(crate) docs: Vec<Value>,
}

impl Rendered {
    pub(crate) fn of_kind(&self, k: &str) -> std::vec::IntoIter<&Value> {
        let of_kind: Vec<&Value> = self.docs.iter().filter(|d| kind(d) == k).collect();
        of_kind.into_iter()
    }

    pub(crate) fn find(&self, k: &str, n: &str) -> Option<&Value> {
        self.of_kind(k).find(|d| name(d) == n)
    }

    pub(crate) fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.docs
            .iter()
            .filter(|d| matches!(kind(d), "Deployment" | "StatefulSet"))
    }

    /// The value of `key` in the named ConfigMap or (decoded) Secret.
    pub(crate) fn data(&self, k: &str, n: &str, key: &str) -> Option<String> {
        let obj = self.find(k, n)?;
        if k == "Secret" {
            if let Some(v) = str_at(obj, &format!("/stringData/{key}")) {
                return Some(v.to_string());
            }
            let encoded = str_at(obj, &format!("/data/{key}"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            return String::from_utf8(bytes).ok();
        }
        obj.pointer(&format!("/data/{key}")).map(scalar)
    }

    pub(crate) fn data_keys(&self, k: &str, n: &str) -> Vec<String> {
        let Some(obj) = self.find(k, n) else {
            return vec![];
        };
        ["/data", "/stringData"]
            .iter()
            .filter_map(|ptr| obj.pointer(ptr).and_then(Value::as_object))
            .flat_map(|m| m.keys().cloned())
            .collect()
    }
}

/// The stage a container runs: the binary its command names.
pub(crate) fn stage_of(container: &Value) -> Option<&'static str> {
    let bin = str_at(container, "/command/0")?;
    let file = bin.strip_prefix("/usr/local/bin/")?;
    STAGES.into_iter().find(|s| *s == file)
}

pub(crate) fn replicas(workload: &Value) -> i64 {
    workload
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// A pod name as the workload's controller would give it.
pub(crate) fn pod_name(workload: &Value) -> String {
    match kind(workload) {
        "StatefulSet" => format!("{}-0", name(workload)),
        _ => format!("{}-5d8f7c9b4-x2k7q", name(workload)),
    }
}

pub(crate) fn port_of(addr: &str) -> Option<i64> {
    addr.rsplit_once(':')?.1.parse().ok()
}
