//! For the property tests of every decoder of outside input (events, zone
//! lines): arbitrary JSON that often uses the decoder's own keys and values,
//! so generated input gets past the first field check.

use proptest::prelude::*;

/// Nested arrays and objects (depth 4) whose object keys are often one of
/// `keys` and whose strings are often one of `strings` (else any string).
pub fn json_with(keys: &'static [&'static str], strings: &'static [&'static str]) -> BoxedStrategy<serde_json::Value> {
    let string = prop_oneof![any::<String>(), prop::sample::select(strings).prop_map(String::from)];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        string.prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 8, move |inner| {
        let key = prop_oneof![any::<String>(), prop::sample::select(keys).prop_map(String::from)];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}
