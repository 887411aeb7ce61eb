//! Generation settings: one type with HF's names and meanings, and the one table that says what
//! each setting is. A model's files give the defaults (`generation_config.json`, else
//! `config.json`, then `task_specific_params["text-generation"]`, as the HF text-generation
//! pipeline reads them); the CLI's options, the page's URL parameters and the widget's settings
//! form all override them through [`GenerationSettings::set`]. The CLI's options and the form
//! are generated from [`SETTINGS`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Most sequences one call may ask for; each costs a row in every forward pass.
pub const MAX_RETURN_SEQUENCES: usize = 64;

/// How a setting's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Bool,
    Int,
    Float,
    Text,
}

/// What one setting is: its HF name, how it is written, and how people are shown it.
#[derive(Debug, Serialize)]
pub struct Setting {
    /// The HF name (also the URL parameter, and the CLI option with `-` for `_`).
    pub name: &'static str,
    pub kind: Kind,
    /// Short label for a form.
    pub label: &'static str,
    /// One sentence on what it does.
    pub help: &'static str,
    /// Shown in the widget's settings form (the rest are URL parameters and CLI options only).
    pub form: bool,
    /// CLI shorthands: `--flag` means this setting set to the value.
    #[serde(skip)]
    pub flags: &'static [(&'static str, &'static str)],
}

const fn setting(
    name: &'static str,
    kind: Kind,
    label: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        name,
        kind,
        label,
        help,
        form: true,
        flags: &[],
    }
}

/// Every generation setting, in the order a form shows them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        flags: &[("greedy", "false"), ("sample", "true")],
        ..setting("do_sample", Kind::Bool, "Sample (off: greedy)", "Draw each token at random from the processed distribution; off picks the most likely token.")
    },
    setting("max_new_tokens", Kind::Int, "Max new tokens", "Most tokens to write after the prompt (default: max_length minus the prompt's length)."),
    setting("min_new_tokens", Kind::Int, "Min new tokens", "Fewest tokens to write before <|endoftext|> may end a sequence."),
    setting("temperature", Kind::Float, "Temperature", "Divides the logits before sampling; below 1 is more predictable, 0 means greedy."),
    setting("top_k", Kind::Int, "Top k", "Sample only among the k most likely tokens; 0 turns it off."),
    setting("top_p", Kind::Float, "Top p", "Sample only among the most likely tokens whose probabilities add up to p (nucleus sampling)."),
    setting("repetition_penalty", Kind::Float, "Repetition penalty", "Above 1 makes tokens already in the text less likely (CTRL's penalty)."),
    setting("no_repeat_ngram_size", Kind::Int, "No repeat n-gram", "Never repeat an n-gram of this size; 0 turns it off."),
    setting("num_return_sequences", Kind::Int, "Samples", "How many sequences to write (greedy writes one)."),
    setting("seed", Kind::Int, "Seed", "Seed of the random draws; the same seed writes the same text (default: a new random seed each time)."),
    setting("stop_at_newline", Kind::Bool, "One line each", "End each sequence at its first newline, one tweet per sequence."),
    Setting {
        form: false,
        ..setting("max_length", Kind::Int, "Max length", "Most tokens of prompt and new text together, used when max_new_tokens is not set.")
    },
    Setting {
        form: false,
        ..setting("min_length", Kind::Int, "Min length", "Fewest tokens of prompt and new text together, used when min_new_tokens is not set.")
    },
    Setting {
        form: false,
        flags: &[("no-prefix", "")],
        ..setting("prefix", Kind::Text, "Prefix", "Text put before every prompt (huggingtweets: <|endoftext|>); empty for none.")
    },
];

/// Everything that shapes one generation, in HF's names and meanings (`max_length` and
/// `min_length` count the prompt but not the prefix; the `*_new_tokens` forms count new tokens
/// only and win when set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationSettings {
    pub do_sample: bool,
    pub max_new_tokens: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub temperature: f32,
    /// 0 turns top-k off.
    pub top_k: usize,
    /// Kept as f64: HF compares `1 - top_p` computed in Python floats.
    pub top_p: f64,
    pub repetition_penalty: f32,
    /// 0 turns it off.
    pub no_repeat_ngram_size: usize,
    pub num_return_sequences: usize,
    /// `None`: a fresh random seed for each generation (the session reports the one it drew).
    pub seed: Option<u64>,
    /// End a sequence at its first newline (the huggingtweets demo showed one tweet per line).
    pub stop_at_newline: bool,
    pub max_length: usize,
    pub min_length: usize,
    /// Text the pipeline puts before every prompt (huggingtweets: `<|endoftext|>`).
    pub prefix: Option<String>,
}

impl Default for GenerationSettings {
    /// `transformers.GenerationConfig()`'s defaults; botcard's own two settings off.
    fn default() -> Self {
        Self {
            do_sample: false,
            max_new_tokens: None,
            min_new_tokens: None,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            num_return_sequences: 1,
            seed: None,
            stop_at_newline: false,
            max_length: 20,
            min_length: 0,
            prefix: None,
        }
    }
}

/// A setting, its value for one model, and what applies when it is left blank: what a form
/// needs to draw itself.
#[derive(Debug, Serialize)]
pub struct SettingState {
    #[serde(flatten)]
    pub setting: &'static Setting,
    /// The current value; null when unset.
    pub value: Value,
    /// What an unset value means ("random", "160 − prompt"), or the value as text.
    pub placeholder: String,
}

/// The table entry of `name`.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

impl Setting {
    /// `raw` as this setting's JSON value. Text (from a URL, a CLI option, a form field) is
    /// parsed by kind; JSON values pass as they are and are type-checked when stored.
    fn coerce(&self, raw: &Value) -> std::result::Result<Value, ()> {
        let Value::String(s) = raw else {
            return Ok(raw.clone());
        };
        let s = s.trim();
        Ok(match self.kind {
            Kind::Text if s.is_empty() => Value::Null,
            Kind::Text => raw.clone(),
            _ if s.is_empty() => Value::Null,
            Kind::Bool => match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Value::Bool(true),
                "false" | "0" | "no" | "off" => Value::Bool(false),
                _ => return Err(()),
            },
            Kind::Int => s.parse::<u64>().map_err(|_| ())?.into(),
            Kind::Float => {
                let f = s.parse::<f64>().map_err(|_| ())?;
                serde_json::Number::from_f64(f).ok_or(())?.into()
            }
        })
    }
}

impl GenerationSettings {
    /// The defaults the HF text-generation pipeline would use: `generation_config.json` when the
    /// model has one, else the generation keys of `config.json`, then
    /// `task_specific_params["text-generation"]` over either.
    pub fn from_model_files(
        config_json: &[u8],
        generation_config_json: Option<&[u8]>,
    ) -> Result<Self> {
        let object = |bytes: &[u8], file: &str| -> Result<Map<String, Value>> {
            serde_json::from_slice(bytes)
                .map_err(|e| Error::Config(format!("{file} is not a JSON object: {e}")))
        };
        let config = object(config_json, "config.json")?;
        let mut out = Self::default();
        match generation_config_json {
            Some(bytes) => out.overlay(
                &object(bytes, "generation_config.json")?,
                "generation_config.json",
            )?,
            None => out.overlay(&config, "config.json")?,
        }
        if let Some(Value::Object(task)) = config
            .get("task_specific_params")
            .and_then(|t| t.get("text-generation"))
        {
            out.overlay(task, "task_specific_params")?;
        }
        Ok(out)
    }

    /// Every known setting in `m` (other keys are the file's own business); a null leaves the
    /// setting as it was, as HF does for keys it has defaults for.
    fn overlay(&mut self, m: &Map<String, Value>, origin: &str) -> Result<()> {
        for s in SETTINGS {
            match m.get(s.name) {
                None | Some(Value::Null) => {}
                Some(v) => self.store(s, v, origin)?,
            }
        }
        Ok(())
    }

    /// Overrides one setting by name from a JSON value or text (CLI, URL, form); text or null
    /// that is empty unsets what can be unset (`seed`, `max_new_tokens`, `prefix`, …) and
    /// leaves the rest as they are.
    pub fn set(&mut self, name: &str, value: &Value) -> Result<()> {
        let s = find(name)
            .ok_or_else(|| Error::Parameter(format!("there is no generation setting `{name}`")))?;
        self.store(s, value, "setting")
    }

    /// Overrides every setting named in `m` (see [`GenerationSettings::set`]).
    pub fn apply(&mut self, m: &Map<String, Value>) -> Result<()> {
        m.iter().try_for_each(|(k, v)| self.set(k, v))
    }

    fn store(&mut self, s: &Setting, raw: &Value, origin: &str) -> Result<()> {
        let name = s.name;
        let bad = || Error::Parameter(format!("{origin}: `{name}` has unusable value {raw}"));
        let value = s.coerce(raw).map_err(|_| bad())?;
        let mut all = serde_json::to_value(&*self).expect("settings serialize");
        all[name] = value.clone();
        match serde_json::from_value(all) {
            Ok(new) => *self = new,
            // Null unsets only the settings that can be unset; the others keep their value.
            Err(_) if value.is_null() => {}
            Err(_) => return Err(bad()),
        }
        if self.prefix.as_deref() == Some("") {
            self.prefix = None;
        }
        Ok(())
    }

    /// Each setting with its value here and what a blank means, for a settings form.
    pub fn describe(&self) -> Vec<SettingState> {
        let all = serde_json::to_value(self).expect("settings serialize");
        SETTINGS
            .iter()
            .map(|s| {
                let value = all[s.name].clone();
                let placeholder = match (s.name, &value) {
                    ("max_new_tokens", Value::Null) => format!("{} − prompt", self.max_length),
                    ("min_new_tokens", Value::Null) => {
                        format!("{} − prompt", self.min_length)
                    }
                    ("seed", Value::Null) => "random".into(),
                    (_, Value::Null) => "none".into(),
                    (_, Value::String(t)) => t.clone(),
                    (_, v) => v.to_string(),
                };
                SettingState {
                    setting: s,
                    value,
                    placeholder,
                }
            })
            .collect()
    }

    /// Whether tokens are drawn at random (else greedy).
    pub fn sampling(&self) -> bool {
        self.do_sample && self.temperature != 0.0
    }

    /// Refuses values outside what a setting can mean, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Parameter(m));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "temperature must be 0 (greedy) or positive, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty must be positive, got {}",
                self.repetition_penalty
            ));
        }
        if self.num_return_sequences == 0 || self.num_return_sequences > MAX_RETURN_SEQUENCES {
            return bad(format!(
                "num_return_sequences must be 1 to {MAX_RETURN_SEQUENCES}, got {}",
                self.num_return_sequences
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_in_the_table_is_a_field_and_every_field_is_in_the_table() {
        let all = serde_json::to_value(GenerationSettings::default()).unwrap();
        let fields: Vec<&String> = all.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), SETTINGS.len());
        for s in SETTINGS {
            assert!(all.get(s.name).is_some(), "{} is not a field", s.name);
        }
    }

    #[test]
    fn text_values_are_parsed_by_kind_and_blank_unsets() {
        let mut g = GenerationSettings::default();
        for (k, v) in [
            ("top_k", "7"),
            ("top_p", "0.5"),
            ("do_sample", "true"),
            ("seed", "42"),
            ("max_new_tokens", "9"),
            ("prefix", "<|endoftext|>"),
        ] {
            g.set(k, &Value::String(v.into())).unwrap();
        }
        assert_eq!((g.top_k, g.top_p, g.do_sample), (7, 0.5, true));
        assert_eq!((g.seed, g.max_new_tokens), (Some(42), Some(9)));
        g.set("seed", &"".into()).unwrap();
        g.set("prefix", &"".into()).unwrap();
        g.set("top_k", &"".into()).unwrap();
        assert_eq!((g.seed, g.prefix.as_deref(), g.top_k), (None, None, 7));
        let e = g.set("temperature", &"hot".into()).unwrap_err().to_string();
        assert!(e.contains("temperature"), "{e}");
        let e = g.set("top_k", &(-3).into()).unwrap_err().to_string();
        assert!(e.contains("top_k"), "{e}");
        let e = g.set("nucleus", &"1".into()).unwrap_err().to_string();
        assert!(e.contains("nucleus"), "{e}");
    }
}
