//! Broken and hostile inputs: each gives a clear error naming the file, never a panic or a
//! huge allocation.

use botcard::{Error, Weights};
use candle_core::Device;
use serde_json::Value;

use crate::util::{bot, torch_zip, torch_zip_with_pickle, Files, PthTensor};

/// The sentence for a broken model loaded whole (the CLI's way); streamed as the tab reads it,
/// it must fail too, with a sentence naming the same file.
fn load_err(files: &Files) -> String {
    let whole = match files.load() {
        Ok(_) => panic!("loaded a broken model"),
        Err(e) => e.to_string(),
    };
    let streamed = match files.stream(botcard::Dtype::F32, 4096, usize::MAX) {
        Ok(_) => panic!("streamed a broken model: {whole}"),
        Err(e) => e.to_string(),
    };
    let file = |m: &str| m.split_once(": ").map(|(f, _)| f.to_owned());
    if let Some(f) = file(&whole).filter(|f| botcard::files::streamed(f)) {
        assert_eq!(
            file(&streamed),
            Some(f),
            "whole: {whole}; streamed: {streamed}"
        );
    }
    whole
}

fn with_config(name: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Files {
    let mut f = Files::of(name);
    let mut cfg: serde_json::Map<String, Value> =
        serde_json::from_slice(f.get("config.json").unwrap()).unwrap();
    edit(&mut cfg);
    f.set("config.json", serde_json::to_vec(&cfg).unwrap());
    f
}

#[test]
fn missing_files_are_named() {
    let e = load_err(Files::of("tiny-st").remove("config.json"));
    assert!(e.contains("config.json"), "{e}");
    let e = load_err(Files::of("tiny-st").remove("model.safetensors"));
    assert!(
        e.contains("model.safetensors") && e.contains("pytorch_model.bin"),
        "{e}"
    );
    let e = load_err(Files::of("tiny-2021").remove("merges.txt"));
    assert!(e.contains("merges.txt"), "{e}");
}

#[test]
fn truncated_or_garbage_safetensors_is_refused() {
    let f = Files::of("tiny-st");
    let st = f.get("model.safetensors").unwrap().to_vec();
    for bad in [
        st[..st.len() / 2].to_vec(),
        st[..5].to_vec(),
        b"hello world, not tensors".to_vec(),
        Vec::new(),
    ] {
        let e = load_err(Files::of("tiny-st").set("model.safetensors", bad));
        assert!(e.starts_with("model.safetensors:"), "{e}");
    }
}

fn safetensors_with_header(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + data_len, 0);
    out
}

#[test]
fn a_header_declaring_a_huge_tensor_allocates_nothing() {
    let h = r#"{"wte.weight":{"dtype":"F32","shape":[1000000000,1000],"data_offsets":[0,4000000000000]}}"#;
    let e = load_err(Files::of("tiny-st").set("model.safetensors", safetensors_with_header(h, 64)));
    assert!(e.starts_with("model.safetensors:"), "{e}");
    // A consistent header whose tensor is simply not the config's shape: refused by shape.
    let h = r#"{"wte.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]}}"#;
    let w = safetensors_with_header(h, 64);
    let e = Weights::from_safetensors(&w)
        .unwrap()
        .get("wte.weight", &[50257, 16], &Device::Cpu)
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

#[test]
fn integer_tensors_are_not_weights() {
    let h = r#"{"wte.weight":{"dtype":"I64","shape":[2,4],"data_offsets":[0,64]}}"#;
    let w = safetensors_with_header(h, 64);
    let e = Weights::from_safetensors(&w)
        .unwrap()
        .get("wte.weight", &[2, 4], &Device::Cpu)
        .unwrap_err();
    assert!(e.to_string().contains("I64"), "{e}");
}

#[test]
fn pytorch_bin_that_is_not_a_zip_or_has_a_bad_pickle_is_refused() {
    let f = Files::of("tiny-2021");
    let bin = f.get("pytorch_model.bin").unwrap().to_vec();
    for bad in [
        bin[..bin.len() / 3].to_vec(),
        b"PK\x03\x04garbage".to_vec(),
        vec![0u8; 100],
    ] {
        let e = load_err(Files::of("tiny-2021").set("pytorch_model.bin", bad));
        assert!(e.starts_with("pytorch_model.bin:"), "{e}");
    }
    for pickle in [
        &b"\x80\x02}(X\x05\x00\x00"[..],
        b"\x80\x02garbage",
        b"\x80\x02].",
    ] {
        let zip = torch_zip_with_pickle(&[], Some(pickle));
        let e = load_err(Files::of("tiny-2021").set("pytorch_model.bin", zip));
        assert!(e.starts_with("pytorch_model.bin:"), "{e}");
    }
}

#[test]
fn legacy_torch_format_gets_a_clear_message() {
    let mut legacy = vec![
        0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
    ];
    legacy.resize(64, 0);
    let e = load_err(Files::of("tiny-2021").set("pytorch_model.bin", legacy));
    assert!(e.contains("legacy"), "{e}");
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn a_hand_built_torch_zip_reads_back_its_values() {
    let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
    let zip = torch_zip(&[PthTensor {
        name: "transformer.wpe.weight",
        storage_class: "FloatStorage",
        shape: vec![2, 3],
        storage_len: 6,
        data: f32_bytes(&data),
    }]);
    let w = Weights::from_pytorch(&zip).unwrap();
    let t = w.get("wpe.weight", &[2, 3], &Device::Cpu).unwrap();
    assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), data);
}

#[test]
fn unknown_storage_types_huge_shapes_and_short_data_are_refused() {
    let tensor = |class: &'static str, shape: Vec<u32>, len: u32, bytes: usize| PthTensor {
        name: "wte.weight",
        storage_class: class,
        shape,
        storage_len: len,
        data: vec![0; bytes],
    };
    let get = |t: PthTensor, shape: &[usize]| {
        let zip = torch_zip(&[t]);
        Weights::from_pytorch(&zip)
            .unwrap()
            .get("wte.weight", shape, &Device::Cpu)
            .unwrap_err()
            .to_string()
    };
    let e = get(tensor("ShortStorage", vec![2, 3], 6, 12), &[2, 3]);
    assert!(e.contains("ShortStorage"), "{e}");
    // A declared 4-billion-element tensor is compared with the config before any data is read.
    let e = get(
        tensor("FloatStorage", vec![65536, 65536], i32::MAX as u32, 16),
        &[50257, 16],
    );
    assert!(e.contains("shape"), "{e}");
    // The storage says 6 elements, the zip entry holds 2.
    let e = get(tensor("FloatStorage", vec![2, 3], 6, 8), &[2, 3]);
    assert!(e.contains("needs"), "{e}");
    // The view needs more elements than its storage declares.
    let e = get(tensor("FloatStorage", vec![2, 3], 4, 24), &[2, 3]);
    assert!(e.contains("past its storage"), "{e}");
}

#[test]
fn shapes_that_disagree_with_the_config_are_named() {
    let f = with_config("tiny-st", |c| {
        c.insert("n_embd".into(), 32.into());
    });
    let e = load_err(&f);
    assert!(
        e.contains("wte.weight") && e.contains("[50257, 32]") && e.contains("[50257, 16]"),
        "{e}"
    );
}

#[test]
fn configs_of_other_models_or_impossible_sizes_are_refused() {
    let e = load_err(&with_config("tiny-st", |c| {
        c.insert("model_type".into(), "llama".into());
    }));
    assert!(e.contains("llama"), "{e}");
    let e = load_err(&with_config("tiny-st", |c| {
        c.insert("n_head".into(), 3.into());
    }));
    assert!(e.contains("n_head (3) does not divide n_embd (16)"), "{e}");
    let e = load_err(&with_config("tiny-st", |c| {
        c.insert("n_layer".into(), 0.into());
    }));
    assert!(e.contains("n_layer"), "{e}");
    let e = load_err(&with_config("tiny-st", |c| {
        c.insert("vocab_size".into(), 1_000_000_000_000u64.into());
    }));
    assert!(e.contains("vocab_size"), "{e}");
    let e = load_err(&with_config("tiny-st", |c| {
        c.insert("activation_function".into(), "swiglu".into());
    }));
    assert!(e.contains("swiglu"), "{e}");
    let e = load_err(Files::of("tiny-st").set("config.json", b"{not json".to_vec()));
    assert!(e.starts_with("config.json:"), "{e}");
}

#[test]
fn broken_tokenizers_are_refused() {
    let e = load_err(Files::of("tiny-st").set("tokenizer.json", b"{\"model\": 3}".to_vec()));
    assert!(e.starts_with("tokenizer.json:"), "{e}");
    let e = load_err(Files::of("tiny-2021").set("merges.txt", b"#version: 0.2\na b c\n".to_vec()));
    assert!(e.contains("merges.txt") && e.contains("line 2"), "{e}");
    let e = load_err(Files::of("tiny-2021").set("vocab.json", b"[1,2,3]".to_vec()));
    assert!(e.starts_with("vocab.json:"), "{e}");
    let e = load_err(&with_config("tiny-st", |c| {
        c.insert("vocab_size".into(), 1000.into());
    }));
    assert!(e.contains("vocab_size is 1000"), "{e}");
}

#[test]
fn absurd_generation_parameters_are_refused_with_the_parameter_named() {
    let b = bot("tiny-st");
    type Edit = Box<dyn Fn(&mut botcard::GenerationSettings)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("top_p", Box::new(|p| p.top_p = 0.0)),
        ("top_p", Box::new(|p| p.top_p = 1.5)),
        ("top_p", Box::new(|p| p.top_p = f64::NAN)),
        ("temperature", Box::new(|p| p.temperature = -1.0)),
        ("temperature", Box::new(|p| p.temperature = f32::INFINITY)),
        (
            "repetition_penalty",
            Box::new(|p| p.repetition_penalty = 0.0),
        ),
        (
            "num_return_sequences",
            Box::new(|p| p.num_return_sequences = 0),
        ),
        (
            "num_return_sequences",
            Box::new(|p| p.num_return_sequences = 1000),
        ),
    ];
    for (name, edit) in cases {
        let mut p = b.settings();
        edit(&mut p);
        let e = b
            .session("My dream is", p)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(name), "{e}");
    }
}

#[test]
fn generation_config_with_wrong_types_is_refused() {
    let e = load_err(&with_config("tiny-2021", |c| {
        c["task_specific_params"]["text-generation"]["temperature"] = "hot".into();
    }));
    assert!(e.contains("temperature"), "{e}");
}
