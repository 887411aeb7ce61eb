//! The wasm API as the worker uses it, in headless Chromium:
//! `cargo test --target wasm32-unknown-unknown --test wasm` (runner: wasm-bindgen-test-runner);
//! `./build.sh test` runs them on the plain simd128 build and again on the relaxed-simd one.
#![cfg(target_arch = "wasm32")]

use botcard::wasm::{is_streamed, next_model_file, parse_card, WasmBot, WasmLoader};
use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[path = "kernels.rs"]
mod kernels;

#[wasm_bindgen_test]
fn quantized_wasm_kernel_equals_the_scalar_reference() {
    kernels::kernel_equals_scalar_reference();
}

#[wasm_bindgen_test]
fn f32_wasm_kernel_equals_the_scalar_reference() {
    kernels::f32_kernel_equals_scalar_reference();
}

#[wasm_bindgen_test]
fn q4_wasm_kernels_equal_the_scalar_reference() {
    kernels::q4_kernels_equal_scalar_reference();
}

#[wasm_bindgen_test]
fn q4_matrices_round_trip_their_ggml_bytes_in_wasm() {
    kernels::q4_matrices_round_trip_ggml_bytes();
}

#[wasm_bindgen_test]
fn simd128_activations_are_quantized_to_seven_bits() {
    kernels::activations_quantize_to_seven_bits();
}

#[wasm_bindgen_test]
fn simd128_quantization_equals_ggml_reference() {
    kernels::quantization_equals_ggml_reference();
}

const REFERENCE: &str = include_str!("fixtures/reference.json");

fn tiny_st() -> Object {
    let files = Object::new();
    let add = |name: &str, bytes: &[u8]| {
        Reflect::set(&files, &name.into(), &Uint8Array::from(bytes).into()).unwrap();
    };
    add(
        "config.json",
        include_bytes!("fixtures/models/tiny-st/config.json"),
    );
    add(
        "generation_config.json",
        include_bytes!("fixtures/models/tiny-st/generation_config.json"),
    );
    add(
        "model.safetensors",
        include_bytes!("fixtures/models/tiny-st/model.safetensors"),
    );
    add(
        "tokenizer.json",
        include_bytes!("fixtures/models/tiny-st/tokenizer.json"),
    );
    files
}

/// Loads a bot from `{name: Uint8Array}` as the worker does: each file whole, except those the
/// library streams, which go in pieces.
fn load(files: &Object) -> Result<WasmBot, wasm_bindgen::JsError> {
    let mut loader = WasmLoader::new(None)?;
    for name in botcard::files::all_names() {
        let v = Reflect::get(files, &name.into()).unwrap();
        let Some(bytes) = v.dyn_ref::<Uint8Array>().map(Uint8Array::to_vec) else {
            continue;
        };
        if is_streamed(name) {
            for piece in bytes.chunks(4096) {
                loader.push(name, piece)?;
            }
        } else {
            loader.add(name, bytes)?;
        }
    }
    loader.finish()
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).unwrap()
}

#[wasm_bindgen_test]
fn greedy_generation_in_the_browser_matches_transformers() {
    let reference: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
    let case = &reference["models"]["tiny-st"]["greedy"][0];
    let expected: Vec<u32> = case["new_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let bot = load(&tiny_st()).map_err(JsValue::from).unwrap();
    let overrides = Object::new();
    for (k, v) in [
        ("do_sample", JsValue::FALSE),
        ("max_new_tokens", 20.into()),
        ("min_new_tokens", 20.into()),
    ] {
        Reflect::set(&overrides, &k.into(), &v).unwrap();
    }
    let mut session = bot
        .start("My dream is", overrides.into())
        .map_err(JsValue::from)
        .unwrap();
    assert_eq!(session.sequence_count(), 1);
    let mut streamed = String::new();
    while !session.is_done() {
        let step = session.step(&bot).map_err(JsValue::from).unwrap();
        let step = js_sys::Array::from(&step);
        assert_eq!(step.length(), 1);
        streamed.push_str(&get(&step.get(0), "text").as_string().unwrap());
    }
    let seqs = js_sys::Array::from(&session.sequences().map_err(JsValue::from).unwrap());
    let ids: Vec<u32> = js_sys::Array::from(&get(&seqs.get(0), "token_ids"))
        .iter()
        .map(|v| v.as_f64().unwrap() as u32)
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(streamed, case["text"].as_str().unwrap());
}

#[wasm_bindgen_test]
fn same_seed_samples_the_same_text_in_the_browser() {
    let bot = load(&tiny_st()).map_err(JsValue::from).unwrap();
    // Settings arrive as numbers (attributes parsed) or as text (URL parameters, form fields).
    let run = |seed: JsValue| {
        let o = Object::new();
        Reflect::set(&o, &"seed".into(), &seed).unwrap();
        Reflect::set(&o, &"max_new_tokens".into(), &"12".into()).unwrap();
        let mut s = bot
            .start("My dream is", o.into())
            .map_err(JsValue::from)
            .unwrap();
        while !s.is_done() {
            s.step(&bot).map_err(JsValue::from).unwrap();
        }
        js_sys::JSON::stringify(&s.sequences().map_err(JsValue::from).unwrap())
            .unwrap()
            .as_string()
            .unwrap()
    };
    assert_eq!(run(42.into()), run("42".into()));
}

#[wasm_bindgen_test]
fn two_sessions_on_one_bot_interleave_without_mixing() {
    let bot = load(&tiny_st()).map_err(JsValue::from).unwrap();
    let start = |seed: u32| {
        let o = Object::new();
        Reflect::set(&o, &"seed".into(), &seed.into()).unwrap();
        Reflect::set(&o, &"max_new_tokens".into(), &10.into()).unwrap();
        bot.start("My dream is", o.into())
            .map_err(JsValue::from)
            .unwrap()
    };
    let text = |s: &botcard::wasm::WasmSession| {
        js_sys::JSON::stringify(&s.sequences().map_err(JsValue::from).unwrap())
            .unwrap()
            .as_string()
            .unwrap()
    };
    let alone = {
        let mut s = start(1);
        while !s.is_done() {
            s.step(&bot).map_err(JsValue::from).unwrap();
        }
        text(&s)
    };
    let (mut a, mut b) = (start(1), start(2));
    while !(a.is_done() && b.is_done()) {
        b.step(&bot).map_err(JsValue::from).unwrap();
        a.step(&bot).map_err(JsValue::from).unwrap();
    }
    assert_eq!(text(&a), alone);
    assert_ne!(text(&b), alone);
}

#[wasm_bindgen_test]
fn the_library_says_which_file_to_fetch_next() {
    let known = Object::new();
    let next = |k: &Object| next_model_file(k.into()).map_err(JsValue::from);
    assert_eq!(next(&known).unwrap().as_deref(), Some("config.json"));
    for (name, have) in [("config.json", true), ("generation_config.json", false)] {
        Reflect::set(&known, &name.into(), &have.into()).unwrap();
    }
    // The tokenizer before the weights.
    assert_eq!(next(&known).unwrap().as_deref(), Some("tokenizer.json"));
    for (name, have) in [
        ("tokenizer.json", true),
        ("model.gguf", false),
        ("model.safetensors", false),
    ] {
        Reflect::set(&known, &name.into(), &have.into()).unwrap();
    }
    assert_eq!(next(&known).unwrap().as_deref(), Some("pytorch_model.bin"));
    Reflect::set(&known, &"pytorch_model.bin".into(), &false.into()).unwrap();
    let err = next(&known).unwrap_err();
    assert_eq!(
        get(&err, "message").as_string().unwrap(),
        "The model has neither model.gguf, model.safetensors nor pytorch_model.bin."
    );
}

#[wasm_bindgen_test]
fn bad_input_is_a_js_error_with_a_sentence() {
    let files = tiny_st();
    Reflect::set(
        &files,
        &"model.safetensors".into(),
        &Uint8Array::from(&b"garbage"[..]).into(),
    )
    .unwrap();
    let err = JsValue::from(load(&files).err().unwrap());
    let msg = get(&err, "message").as_string().unwrap();
    assert!(msg.starts_with("model.safetensors:"), "{msg}");

    let bot = load(&tiny_st()).map_err(JsValue::from).unwrap();
    let o = Object::new();
    Reflect::set(&o, &"top_p".into(), &5.into()).unwrap();
    let err = JsValue::from(bot.start("x", o.into()).err().unwrap());
    assert!(get(&err, "message").as_string().unwrap().contains("top_p"));
}

#[wasm_bindgen_test]
fn cards_render_in_the_browser() {
    let card = parse_card(include_bytes!(
        "../www/models/huggingtweets/joebiden/README.md"
    ))
    .map_err(JsValue::from)
    .unwrap();
    assert_eq!(get(&card, "badge").as_string().unwrap(), "🤖 AI BOT 🤖");
    assert_eq!(js_sys::Array::from(&get(&card, "users")).length(), 1);
}

#[wasm_bindgen_test]
fn the_held_file_reads_back_with_the_checksum_it_was_written_with() {
    // The worker records a cached file's checksum as it writes it and compares it with what a
    // loader counts reading it back. Length and Adler-32 of the standard check string:
    let mut loader = WasmLoader::new(None).unwrap();
    loader.add("config.json", b"123456789".to_vec()).ok();
    assert_eq!(
        loader.checksum("config.json").as_deref(),
        Some("9:adler32:091e01de")
    );
    assert_eq!(loader.checksum("tokenizer.json"), None);

    let bot = load(&tiny_st()).unwrap();
    let mut held = bot.held_weights().unwrap();
    let mut written = Vec::new();
    while let Some(view) = held.next(&bot).unwrap() {
        written.extend(view.to_vec());
    }
    assert_eq!(written.len() as f64, held.size());
    let sum = held.checksum();
    // Read back through a loader told the record first, in pieces: nothing is damaged.
    let read_back = |bytes: &[u8], record: &str| {
        let mut loader = WasmLoader::new(None).unwrap();
        loader.expect(&botcard::wasm::held_file(), record).unwrap();
        for piece in bytes.chunks(1000) {
            // (The loader refuses weights before a config; it counts them all the same.)
            loader.push(&botcard::wasm::held_file(), piece).ok();
        }
        (
            loader.checksum(&botcard::wasm::held_file()).unwrap(),
            loader.damaged(),
        )
    };
    assert_eq!(read_back(&written, &sum), (sum.clone(), vec![]));
    // One changed byte, or a byte short, and the file is damaged.
    let mut changed = written.clone();
    changed[written.len() / 2] ^= 1;
    assert_eq!(read_back(&changed, &sum).1, [botcard::wasm::held_file()]);
    assert_eq!(
        read_back(&written[..written.len() - 1], &sum).1,
        [botcard::wasm::held_file()]
    );
}

#[wasm_bindgen_test]
fn a_record_kept_in_the_older_crc32_form_still_checks_a_cached_file() {
    // Records made before Adler-32: "<length>:<crc32>" (CRC-32 of the check string is cbf43926).
    let told = |record: &str, bytes: &[u8]| {
        let mut loader = WasmLoader::new(None).unwrap();
        loader.expect("config.json", record).unwrap();
        loader.add("config.json", bytes.to_vec()).ok();
        loader.damaged()
    };
    assert!(told("9:cbf43926", b"123456789").is_empty());
    assert_eq!(told("9:cbf43926", b"123456780"), ["config.json"]);
    assert_eq!(told("9:adler32:091e01de", b"123456780"), ["config.json"]);
    assert_eq!(told("not a record", b"123456789"), ["config.json"]);
    // A record told after the file's bytes could not be checked: refused.
    let mut late = WasmLoader::new(None).unwrap();
    late.add("config.json", b"123456789".to_vec()).ok();
    assert!(late.expect("config.json", "9:cbf43926").is_err());
}
