//! Prices as routing sees them: one blended number per model, for the
//! cost score of `select` and for `cheapest`. The prices are config
//! ([`Model::prices`]); budgets price requests themselves (`budget::charge`).

use crate::config::Model;

impl Model {
    /// Blended list price: (3 × input + output) / 4, USD per million tokens.
    pub fn blended_usd_per_mtok(&self) -> f64 {
        (3.0 * self.prices.input_usd_per_mtok + self.prices.output_usd_per_mtok) / 4.0
    }
}
