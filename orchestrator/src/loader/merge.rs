//! Temporary stand-in (being written).
#![allow(missing_docs, clippy::all)]
use serde_yaml::Value;
pub fn merge_project(base: Value, overlay: Value) -> Value { merge_service(base, overlay) }
pub fn merge_service(base: Value, overlay: Value) -> Value {
    match (base, overlay) {
        (Value::Mapping(mut b), Value::Mapping(o)) => { for (k, v) in o { let nv = match b.remove(&k) { Some(bv) => merge_service(bv, v), None => v }; b.insert(k, nv); } Value::Mapping(b) }
        (_, o) => o,
    }
}
pub fn enforce_unicity(_p: &mut Value) {}
pub fn strip_tags(v: Value) -> Value { v }
