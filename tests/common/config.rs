//! A builder for the YAML the harness feeds to `Modelgate::start`, so a test
//! says which providers, models and routes it needs in one chain instead of
//! a hand-written block:
//!
//! ```ignore
//! let yaml = Config::new()
//!     .provider("openai", Kind::OpenAi, &mock)
//!     .provider("ollama", Kind::OpenAi, &local).with("local: true")
//!     .model("gpt-4o", "openai").prices(2.5, 10.0).fallbacks(["llama"])
//!     .model("llama", "ollama").id("llama3.1:8b").prices(0.0, 0.0)
//!     .route(r#"name: mini, match: { model: "gpt-4o*" }, target: gpt-4o-mini"#)
//!     .raw("retry: { max_attempts: 1 }\n")
//!     .build();
//! ```
//!
//! Every provider, model and route is one flow mapping; `with` adds a field
//! to the last one added. Sections the builder does not model (budgets,
//! routing, forward_proxy, limits, retry, …) go in with `raw`, which must
//! not repeat `providers:`, `models:` or `routes:` when the builder writes
//! them.
//!
//! It knows nothing of the harness (a provider is served at any
//! [`Upstream`]: a mock, or a root URL such as `"http://127.0.0.1:9"`), so
//! the library's unit tests use it too, as `crate::test_config` (see
//! `src/lib.rs`); `tests/common/mod.rs` makes a `&Mock` an `Upstream`.
#![allow(dead_code)]

/// A provider's wire dialect: the `kind:` and the path its `base_url` adds
/// to the server root.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Anthropic => "anthropic",
            Kind::Gemini => "gemini",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::OpenAi => "/v1",
            Kind::Anthropic => "",
            Kind::Gemini => "/v1beta",
        }
    }
}

/// Where a provider is served: a server root (`http://127.0.0.1:PORT`,
/// `https://localhost:PORT`), or a mock (`tests/common/mod.rs`).
pub trait Upstream {
    fn root(&self) -> String;
}

impl Upstream for &str {
    fn root(&self) -> String {
        self.to_string()
    }
}

impl Upstream for &String {
    fn root(&self) -> String {
        self.to_string()
    }
}

impl Upstream for String {
    fn root(&self) -> String {
        self.clone()
    }
}

/// One flow mapping: a provider or model (`name: { … }`) or a route
/// (`- { … }`).
struct Entry {
    name: String,
    fields: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    None,
    Providers,
    Models,
    Routes,
}

pub struct Config {
    raw: String,
    providers: Vec<Entry>,
    models: Vec<Entry>,
    routes: Vec<Entry>,
    /// The section of the last entry added: what `with` and the model
    /// setters change.
    last: Section,
}

impl Default for Config {
    fn default() -> Config {
        Config::new()
    }
}

/// A price in USD per million tokens as YAML writes it (`10`, `2.5`, `0.075`).
fn usd(v: f64) -> String {
    format!("{v}")
}

impl Config {
    pub fn new() -> Config {
        Config { raw: String::new(), providers: Vec::new(), models: Vec::new(), routes: Vec::new(), last: Section::None }
    }

    /// Providers `openai` and `anthropic`, both served at `at`.
    pub fn openai_anthropic(at: impl Upstream + Copy) -> Config {
        Config::new().provider("openai", Kind::OpenAi, at).provider("anthropic", Kind::Anthropic, at)
    }

    /// The four models most tests use, at list prices with cached-input
    /// prices: gpt-4o (falling back to gpt-4o-mini) and gpt-4o-mini on
    /// `openai`, claude-sonnet and claude-haiku on `anthropic`.
    pub fn standard_models(self) -> Config {
        self.model("gpt-4o", "openai")
            .prices(2.5, 10.0)
            .cached(1.25)
            .fallbacks(["gpt-4o-mini"])
            .model("gpt-4o-mini", "openai")
            .prices(0.15, 0.6)
            .cached(0.075)
            .model("claude-sonnet", "anthropic")
            .id("claude-sonnet-4-5-20250929")
            .prices(3.0, 15.0)
            .cached(0.3)
            .model("claude-haiku", "anthropic")
            .id("claude-haiku-4-5-20251001")
            .prices(1.0, 5.0)
            .cached(0.1)
    }

    /// Routes `mini` (gpt-4o* → gpt-4o-mini) and `cheap-claude`
    /// (claude-sonnet* → claude-haiku).
    pub fn standard_routes(self) -> Config {
        self.route(r#"name: mini, match: { model: "gpt-4o*" }, target: gpt-4o-mini"#)
            .route(r#"name: cheap-claude, match: { model: "claude-sonnet*" }, target: claude-haiku"#)
    }

    /// A provider `name` of `kind` served at `at`; the kind adds its path
    /// (`/v1`, `/v1beta`) to the root.
    pub fn provider(mut self, name: &str, kind: Kind, at: impl Upstream) -> Config {
        let fields = vec![format!("kind: {}", kind.name()), format!("base_url: \"{}{}\"", at.root(), kind.path())];
        self.providers.push(Entry { name: name.into(), fields });
        self.last = Section::Providers;
        self
    }

    /// A model `name` served by `provider`; its id upstream is `name`
    /// unless `id` says otherwise.
    pub fn model(mut self, name: &str, provider: &str) -> Config {
        self.models.push(Entry { name: name.into(), fields: vec![format!("provider: {provider}")] });
        self.last = Section::Models;
        self
    }

    /// The last model's upstream id.
    pub fn id(self, id: &str) -> Config {
        self.model_field(format!("id: \"{id}\""))
    }

    /// The last model's input and output prices, USD per million tokens.
    pub fn prices(self, input: f64, output: f64) -> Config {
        self.model_field(format!("input_usd_per_mtok: {}", usd(input))).model_field(format!("output_usd_per_mtok: {}", usd(output)))
    }

    /// The last model's cached-input price, USD per million tokens.
    pub fn cached(self, input: f64) -> Config {
        self.model_field(format!("cached_input_usd_per_mtok: {}", usd(input)))
    }

    /// The last model's fallbacks, in order.
    pub fn fallbacks<'a>(self, models: impl IntoIterator<Item = &'a str>) -> Config {
        let list: Vec<&str> = models.into_iter().collect();
        self.model_field(format!("fallbacks: [{}]", list.join(", ")))
    }

    /// A route: the fields of its flow mapping
    /// (`name: mini, match: { model: "gpt-4o*" }, target: gpt-4o-mini`).
    pub fn route(mut self, fields: &str) -> Config {
        self.routes.push(Entry { name: String::new(), fields: vec![fields.into()] });
        self.last = Section::Routes;
        self
    }

    /// A route `name` for models matching `glob` that picks by complexity:
    /// each (max_complexity, model) tier in order.
    pub fn tiers<'a>(self, name: &str, glob: &str, tiers: impl IntoIterator<Item = (u32, &'a str)>) -> Config {
        let tiers: Vec<String> = tiers.into_iter().map(|(c, m)| format!("{{ max_complexity: {c}, model: {m} }}")).collect();
        self.route(&format!("name: {name}, match: {{ model: \"{glob}\" }}, tiers: [{}]", tiers.join(", ")))
    }

    /// One more field (`local: true`, `max_output_tokens: 400`,
    /// `shadow: true`) on the last provider, model or route added; an empty
    /// `field` adds nothing.
    pub fn with(mut self, field: &str) -> Config {
        if field.is_empty() {
            return self;
        }
        let entry = match self.last {
            Section::Providers => self.providers.last_mut(),
            Section::Models => self.models.last_mut(),
            Section::Routes => self.routes.last_mut(),
            Section::None => None,
        };
        entry.expect("`with` follows a provider, model or route").fields.push(field.into());
        self
    }

    /// YAML the builder does not model, top-level sections with their
    /// keys (`"retry: { max_attempts: 1 }\n"`, `"budgets:\n  - …\n"`).
    pub fn raw(mut self, yaml: &str) -> Config {
        self.raw.push_str(yaml);
        if !yaml.is_empty() && !yaml.ends_with('\n') {
            self.raw.push('\n');
        }
        self
    }

    fn model_field(mut self, field: String) -> Config {
        assert!(self.last == Section::Models, "a model setter follows `model`");
        self.models.last_mut().unwrap().fields.push(field);
        self
    }

    /// The YAML: the raw sections, then `providers:`, `models:` and
    /// `routes:` (each only when it has entries).
    pub fn build(&self) -> String {
        let mut out = self.raw.clone();
        let mut section = |title: &str, entries: &[Entry], route: bool| {
            if entries.is_empty() {
                return;
            }
            out.push_str(title);
            out.push_str(":\n");
            for e in entries {
                let fields = e.fields.join(", ");
                if route {
                    out.push_str(&format!("  - {{ {fields} }}\n"));
                } else {
                    out.push_str(&format!("  {}: {{ {fields} }}\n", e.name));
                }
            }
        };
        section("providers", &self.providers, false);
        section("models", &self.models, false);
        section("routes", &self.routes, true);
        out
    }
}
