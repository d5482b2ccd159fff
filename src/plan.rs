//! The plan map: which Stripe prices (by id or lookup_key) or products give
//! which plan in the app.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::run::Expectation;

/// A price as an event shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRef {
    pub price_id: String,
    pub lookup_key: Option<String>,
    pub product_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanMap {
    entries: BTreeMap<String, String>,
    /// Which plan wins when a subscription's items map to several: earlier
    /// in this list wins; plans not listed rank after, in item order.
    priority: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "plan map entry `{entry}` is not valid: {why} (expected PRICE_OR_LOOKUP_KEY_OR_PRODUCT=plan)"
)]
pub struct PlanMapError {
    pub entry: String,
    pub why: &'static str,
}

impl PlanMap {
    pub fn new(entries: BTreeMap<String, String>) -> Result<PlanMap, PlanMapError> {
        for (key, plan) in &entries {
            if key.trim().is_empty() || plan.trim().is_empty() {
                return Err(PlanMapError {
                    entry: format!("{key}={plan}"),
                    why: "both sides must be non-empty",
                });
            }
        }
        Ok(PlanMap {
            entries,
            priority: Vec::new(),
        })
    }

    /// Sets which plan wins when several items of one subscription map.
    pub fn with_priority(mut self, priority: Vec<String>) -> PlanMap {
        self.priority = priority;
        self
    }

    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.entries
    }

    pub fn priority(&self) -> &[String] {
        &self.priority
    }

    fn rank(&self, plan: &str) -> usize {
        self.priority
            .iter()
            .position(|p| p == plan)
            .unwrap_or(self.priority.len())
    }

    /// The plan for one price: its id first, then its lookup_key, then its
    /// product, so that a specific price can override its product's plan.
    pub fn plan_for(&self, price: &PriceRef) -> Option<&str> {
        [
            Some(&price.price_id),
            price.lookup_key.as_ref(),
            price.product_id.as_ref(),
        ]
        .into_iter()
        .flatten()
        .find_map(|key| self.entries.get(key))
        .map(String::as_str)
    }

    /// The plan for the prices of one event: of the prices that map, the
    /// plan ranked first by the priority list wins (the first item on a
    /// tie); when none maps, the reason names every price seen.
    pub fn plan_of(&self, prices: &[PriceRef]) -> Result<String, String> {
        let best = prices
            .iter()
            .filter_map(|p| self.plan_for(p))
            .enumerate()
            .min_by_key(|(i, plan)| (self.rank(plan), *i));
        if let Some((_, plan)) = best {
            return Ok(plan.to_owned());
        }
        if prices.is_empty() {
            return Err("the event names no price".into());
        }
        let seen: Vec<String> = prices
            .iter()
            .map(|p| {
                let mut s = p.price_id.clone();
                if let Some(k) = &p.lookup_key {
                    s.push_str(&format!(" (lookup_key {k})"));
                }
                if let Some(prod) = &p.product_id {
                    s.push_str(&format!(" (product {prod})"));
                }
                s
            })
            .collect();
        Err(format!(
            "no price of the event is in ASSAY_PLAN_MAP: {}",
            seen.join(", ")
        ))
    }

    /// [`PlanMap::plan_of`] as an expectation of exactly that plan.
    pub fn expectation(&self, prices: &[PriceRef]) -> Expectation {
        match self.plan_of(prices) {
            Ok(plan) => Expectation::Plan(plan),
            Err(reason) => Expectation::Unknown { reason },
        }
    }
}

impl FromStr for PlanMap {
    type Err = PlanMapError;

    /// `price_123=pro,pro_monthly=pro,prod_9=team`
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut entries = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, plan) = entry.split_once('=').ok_or_else(|| PlanMapError {
                entry: entry.to_owned(),
                why: "it has no `=`",
            })?;
            entries.insert(key.trim().to_owned(), plan.trim().to_owned());
        }
        PlanMap::new(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(id: &str, lookup: Option<&str>, product: Option<&str>) -> PriceRef {
        PriceRef {
            price_id: id.into(),
            lookup_key: lookup.map(Into::into),
            product_id: product.map(Into::into),
        }
    }

    #[test]
    fn price_id_beats_lookup_key_beats_product() {
        let map: PlanMap = "price_1=pro, pro_key=team ,prod_1=starter".parse().unwrap();
        assert_eq!(
            map.plan_for(&price("price_1", Some("pro_key"), Some("prod_1"))),
            Some("pro")
        );
        assert_eq!(
            map.plan_for(&price("price_2", Some("pro_key"), Some("prod_1"))),
            Some("team")
        );
        assert_eq!(
            map.plan_for(&price("price_2", None, Some("prod_1"))),
            Some("starter")
        );
        assert_eq!(map.plan_for(&price("price_2", None, None)), None);
    }

    #[test]
    fn the_priority_list_says_which_plan_wins_for_several_items() {
        let map: PlanMap = "price_a=starter,price_b=team,price_c=pro".parse().unwrap();
        let items = [price("price_a", None, None), price("price_c", None, None)];
        assert_eq!(
            map.plan_of(&items),
            Ok("starter".into()),
            "item order without priority"
        );
        let map = map.with_priority(vec!["team".into(), "pro".into()]);
        assert_eq!(map.plan_of(&items), Ok("pro".into()));
        let items = [price("price_x", None, None), price("price_b", None, None)];
        assert_eq!(
            map.plan_of(&items),
            Ok("team".into()),
            "unmapped items are skipped"
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(
            "price_1"
                .parse::<PlanMap>()
                .unwrap_err()
                .to_string()
                .contains("price_1")
        );
        assert!("price_1=".parse::<PlanMap>().is_err());
        assert_eq!("".parse::<PlanMap>(), Ok(PlanMap::default()));
    }
}
