//! The WebAssembly face of the library, for `www/worker.js` (the only importer of `pkg/`).
//! Models arrive as bytes the worker fetched; errors leave as one readable sentence.

use wasm_bindgen::prelude::*;

use crate::{card, Bot, ModelFiles, ParamOverrides, Session};

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: serde::Serialize>(v: &T) -> Result<JsValue, JsError> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_err)
}

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// Parses and sanitizes a model card (`README.md` bytes) into what the card view draws.
#[wasm_bindgen(js_name = renderCard)]
pub fn render_card(readme: &[u8]) -> Result<JsValue, JsError> {
    to_js(&card::parse_card(readme))
}

/// A loaded bot and the generation in progress, if any.
#[wasm_bindgen]
pub struct WasmBot {
    bot: Bot,
    session: Option<Session>,
}

#[wasm_bindgen]
impl WasmBot {
    /// Loads a bot from `{ "config.json": Uint8Array, "model.safetensors": Uint8Array, … }`
    /// (the names of [`ModelFiles::NAMES`]; absent files left out).
    #[wasm_bindgen(constructor)]
    pub fn new(files: &js_sys::Object) -> Result<WasmBot, JsError> {
        let mut bytes: Vec<(&str, Vec<u8>)> = Vec::new();
        for name in ModelFiles::NAMES {
            let v = js_sys::Reflect::get(files, &JsValue::from_str(name))
                .map_err(|_| js_err("bad files object"))?;
            if let Some(arr) = v.dyn_ref::<js_sys::Uint8Array>() {
                bytes.push((name, arr.to_vec()));
            }
        }
        let files = ModelFiles::from_lookup(|n| {
            bytes
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, b)| b.as_slice())
        });
        let bot = Bot::load(&files).map_err(js_err)?;
        Ok(WasmBot { bot, session: None })
    }

    /// The model's generation defaults (HF pipeline semantics), for the settings form.
    pub fn defaults(&self) -> Result<JsValue, JsError> {
        to_js(&self.bot.defaults)
    }

    /// Starts generating after `prompt`; `overrides` uses the URL-parameter names
    /// (`max_new_tokens`, `do_sample`, `seed`, …). Returns the number of sequences.
    pub fn start(&mut self, prompt: &str, overrides: JsValue) -> Result<usize, JsError> {
        let o: ParamOverrides = if overrides.is_undefined() || overrides.is_null() {
            ParamOverrides::default()
        } else {
            serde_wasm_bindgen::from_value(overrides).map_err(js_err)?
        };
        let session = self
            .bot
            .session(prompt, o.apply(self.bot.default_params()))
            .map_err(js_err)?;
        let n = session.sequence_count();
        self.session = Some(session);
        Ok(n)
    }

    /// One token per unfinished sequence: `[{sequence, token_id, text}]`; empty when done.
    pub fn step(&mut self) -> Result<JsValue, JsError> {
        let Some(session) = self.session.as_mut() else {
            return to_js(&Vec::<u8>::new());
        };
        let tokens = self.bot.step(session).map_err(js_err)?;
        to_js(&tokens)
    }

    /// Whether the current generation has finished (true when none was started).
    #[wasm_bindgen(js_name = isDone)]
    pub fn is_done(&self) -> bool {
        self.session.as_ref().is_none_or(Session::is_done)
    }

    /// `[{text, token_ids}]` of the current generation.
    pub fn sequences(&self) -> Result<JsValue, JsError> {
        to_js(
            &self
                .session
                .as_ref()
                .map(Session::sequences)
                .unwrap_or_default(),
        )
    }

    /// Drops the current generation (the Stop button).
    pub fn stop(&mut self) {
        self.session = None;
    }
}
