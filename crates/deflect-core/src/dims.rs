//! Bounded metric dimensions.
//!
//! Every label value comes from a configured, finite set: a value outside the set folds into
//! `other`, an absent value is `none`. This is what keeps the Prometheus series count bounded
//! whatever the input says.

use serde::{Deserialize, Serialize};

use crate::event::{Channel, Text};

pub const OTHER: &str = "other";
pub const NONE: &str = "none";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DimensionsConfig {
    /// Tenants reported by name; others are `other`.
    pub tenants: Vec<String>,
    /// Intents reported by name; others are `other`, absent ones `none`.
    pub intents: Vec<String>,
    /// Queues reported by name; others are `other`, absent ones `none`.
    pub queues: Vec<String>,
    /// IVR node ids reported by name; others are `other`.
    pub ivr_nodes: Vec<String>,
}

impl DimensionsConfig {
    fn fold(set: &[String], v: Option<&str>) -> Text {
        match v {
            None | Some("") => Text::const_new(NONE),
            Some(v) if set.iter().any(|s| s == v) => v.into(),
            Some(_) => Text::const_new(OTHER),
        }
    }
    pub fn tenant(&self, v: &str) -> Text {
        Self::fold(&self.tenants, Some(v))
    }
    pub fn intent(&self, v: Option<&str>) -> Text {
        Self::fold(&self.intents, v)
    }
    pub fn queue(&self, v: Option<&str>) -> Text {
        Self::fold(&self.queues, v)
    }
    pub fn ivr_node(&self, v: &str) -> Text {
        Self::fold(&self.ivr_nodes, Some(v))
    }
}

/// The bounded dimensions of one contact, already folded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dimensions {
    pub tenant: Text,
    pub channel: Channel,
    pub intent: Text,
    pub queue: Text,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_unknown_and_absent_values() {
        let c = DimensionsConfig {
            tenants: vec!["acme".into()],
            intents: vec!["billing".into()],
            queues: vec![],
            ivr_nodes: vec!["main".into()],
        };
        assert_eq!(c.tenant("acme"), "acme");
        assert_eq!(c.tenant("evil-corp"), "other");
        assert_eq!(c.intent(Some("billing")), "billing");
        assert_eq!(c.intent(Some("cust-12345")), "other");
        assert_eq!(c.intent(None), "none");
        assert_eq!(c.queue(Some("")), "none");
        assert_eq!(c.queue(Some("sales")), "other");
        assert_eq!(c.ivr_node("main"), "main");
        assert_eq!(c.ivr_node("menu-7"), "other");
    }
}
