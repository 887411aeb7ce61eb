//! `model.gguf` (`botcard::gguf`): what `convert` writes is llama.cpp's GPT-2 layout, a q8_0 file
//! loads to exactly what quantizing at load makes, 4-bit files stay close to f32 in less memory,
//! and the file reads the same in any pieces.

use std::io::Cursor;

use botcard::files::{WeightsFormat, GGUF, SAFETENSORS};
use botcard::gguf::FileType;
use botcard::weights::Precision;
use botcard::{files, Bot, Dtype};
use candle_core::quantized::{gguf_file, GgmlDType};

use crate::util::Files;

fn default_bot() -> Files {
    Files::read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default"))
}

/// `f` with its weights converted to `format` (the other weights files removed).
fn converted(f: &Files, format: WeightsFormat) -> Files {
    let out = f.model_files().to_preferred(format).unwrap();
    Files(out.into_iter().map(|(n, b)| (n.to_owned(), b)).collect())
}

fn gguf(f: &Files, t: FileType) -> Files {
    converted(f, WeightsFormat::Gguf(t))
}

const TEXT: &str = "My dream is to see the sea once more, and to tell everyone about it";

fn logprobs(bot: &Bot) -> Vec<f32> {
    bot.model
        .logprobs(&bot.tokenizer.encode(TEXT).unwrap())
        .unwrap()
}

#[test]
fn converting_writes_model_gguf_beside_config_and_tokenizer() {
    let out = gguf(&default_bot(), FileType::Q8_0);
    assert!(out.get(GGUF).is_some());
    assert!(out.get(SAFETENSORS).is_none());
    assert!(out.get(files::CONFIG).is_some() && out.get(files::TOKENIZER).is_some());
}

#[test]
fn a_gguf_has_llama_cpp_gpt2_names_metadata_and_tokenizer() {
    let f = default_bot();
    let bot = f.load().unwrap();
    let cfg = &bot.config;
    let bytes = gguf(&f, FileType::Q4K).get(GGUF).unwrap().to_vec();
    let c = gguf_file::Content::read(&mut Cursor::new(&bytes)).unwrap();
    let meta = |k: &str| c.metadata.get(k).unwrap_or_else(|| panic!("no {k}"));
    assert_eq!(meta("general.architecture").to_string().unwrap(), "gpt2");
    assert_eq!(
        meta("gpt2.block_count").to_u32().unwrap() as usize,
        cfg.n_layer
    );
    assert_eq!(
        meta("gpt2.embedding_length").to_u32().unwrap() as usize,
        cfg.n_embd
    );
    assert_eq!(
        meta("gpt2.context_length").to_u32().unwrap() as usize,
        cfg.n_positions
    );
    assert_eq!(
        meta("gpt2.attention.head_count").to_u32().unwrap() as usize,
        cfg.n_head
    );
    assert_eq!(meta("tokenizer.ggml.model").to_string().unwrap(), "gpt2");
    let tokens = meta("tokenizer.ggml.tokens").to_vec().unwrap();
    assert_eq!(tokens.len(), bot.tokenizer.vocab_size());
    let eos = meta("tokenizer.ggml.eos_token_id").to_u32().unwrap();
    assert_eq!(tokens[eos as usize].to_string().unwrap(), "<|endoftext|>");
    // Token strings are the byte-level BPE's: " the" is "Ġthe".
    let the = bot.tokenizer.token_to_id("Ġthe").unwrap();
    assert_eq!(tokens[the as usize].to_string().unwrap(), "Ġthe");
    assert!(!meta("tokenizer.ggml.merges").to_vec().unwrap().is_empty());
    let c3 = 3 * cfg.n_embd;
    let qkv = &c.tensor_infos["blk.0.attn_qkv.weight"];
    assert_eq!(qkv.shape.dims(), [c3, cfg.n_embd]);
    assert_eq!(qkv.ggml_dtype, GgmlDType::Q4K);
    assert_eq!(
        c.tensor_infos["blk.0.attn_qkv.bias"].ggml_dtype,
        GgmlDType::F32
    );
    assert_eq!(
        c.tensor_infos["token_embd.weight"].shape.dims(),
        [cfg.vocab_size, cfg.n_embd]
    );
    assert!(c.tensor_infos.contains_key("position_embd.weight"));
    assert!(c
        .tensor_infos
        .contains_key(&format!("blk.{}.ffn_down.weight", cfg.n_layer - 1)));
    // Tied: the output matrix is token_embd's, stored once.
    assert!(!c.tensor_infos.contains_key("output.weight"));
}

#[test]
fn a_q8_0_gguf_loads_to_exactly_what_quantizing_at_load_makes() {
    let f = default_bot();
    let at_load = Bot::load(&f.model_files(), Dtype::Q8_0).unwrap();
    let from_file = Bot::load(&gguf(&f, FileType::Q8_0).model_files(), Dtype::Q8_0).unwrap();
    assert_eq!(logprobs(&from_file), logprobs(&at_load));
    assert_eq!(from_file.model.weight_bytes(), at_load.model.weight_bytes());
}

#[test]
fn four_bit_files_stay_close_to_f32_in_less_memory() {
    let f = default_bot();
    let f32 = Bot::load(&f.model_files(), Dtype::F32).unwrap();
    let q8 = Bot::load(&f.model_files(), Dtype::Q8_0).unwrap();
    let want = logprobs(&f32);
    for (t, tol) in [(FileType::Q4_0, 0.4), (FileType::Q4K, 0.4)] {
        let bot = Bot::load(&gguf(&f, t).model_files(), Dtype::Q8_0).unwrap();
        let got = logprobs(&bot);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "{t:?}: max |Δ logprob| {worst}, {} bytes",
            bot.model.weight_bytes()
        );
        assert!(worst < tol, "{t:?}: max |Δ logprob| {worst}");
        assert!(
            bot.model.weight_bytes() < q8.model.weight_bytes() * 7 / 10,
            "{t:?}: {} bytes against q8_0's {}",
            bot.model.weight_bytes(),
            q8.model.weight_bytes()
        );
    }
}

#[test]
fn a_quantized_gguf_asked_for_in_f32_holds_its_values_dequantized() {
    let f = default_bot();
    let q8 = gguf(&f, FileType::Q8_0);
    let as_q8 = Bot::load(&q8.model_files(), Dtype::Q8_0).unwrap();
    let as_f32 = Bot::load(&q8.model_files(), Dtype::F32).unwrap();
    let f32 = Bot::load(&f.model_files(), Dtype::F32).unwrap();
    assert_eq!(as_f32.model.weight_bytes(), f32.model.weight_bytes());
    // Same weights, f32 activations instead of 7-bit ones: close, not equal.
    for (a, b) in logprobs(&as_f32).iter().zip(logprobs(&as_q8)) {
        assert!((a - b).abs() < 0.2, "{a} vs {b}");
    }
}

#[test]
fn rows_that_do_not_fill_four_bit_blocks_fall_back_to_q8_0_or_f16() {
    // tiny-st's rows are 32 values: too short for q4_K's 256-value blocks.
    let f = Files::of("tiny-st");
    let want = logprobs(&Bot::load(&f.model_files(), Dtype::F32).unwrap());
    let out = gguf(&f, FileType::Q4K);
    let c = gguf_file::Content::read(&mut Cursor::new(out.get(GGUF).unwrap())).unwrap();
    let t = c.tensor_infos["blk.0.attn_qkv.weight"].ggml_dtype;
    assert!(matches!(t, GgmlDType::Q8_0 | GgmlDType::F16), "{t:?}");
    let got = logprobs(&Bot::load(&out.model_files(), Dtype::Q8_0).unwrap());
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 0.1, "{a} vs {b}");
    }
}

#[test]
fn a_gguf_read_in_pieces_equals_the_whole_file() {
    let f = default_bot();
    for t in [FileType::Q8_0, FileType::Q4K] {
        let file = gguf(&f, t);
        let whole = Bot::load(&file.model_files(), Dtype::Q8_0).unwrap();
        let want = logprobs(&whole);
        for piece in [997, 65536, usize::MAX] {
            let bot = file.stream(Dtype::Q8_0, piece, usize::MAX).unwrap();
            assert_eq!(logprobs(&bot), want, "{t:?} in pieces of {piece}");
        }
    }
}

/// Found by fuzzing (`./build.sh fuzz gguf`): the header was parsed again for every piece that
/// arrived, so a GPT-2 vocabulary's 1.5 MB header in small pieces took tens of gigabytes of
/// parsing. It is now tried only each time the bytes in hand have doubled.
#[test]
fn a_large_gguf_header_in_small_pieces_is_not_parsed_once_per_piece() {
    let file = gguf(&Files::of("tiny-st"), FileType::Q8_0);
    let whole = Bot::load(&file.model_files(), Dtype::Q8_0).unwrap();
    let bot = file.stream(Dtype::Q8_0, 61, usize::MAX).unwrap();
    assert_eq!(logprobs(&bot), logprobs(&whole));
}

#[test]
fn a_broken_gguf_is_one_sentence() {
    let file = gguf(&default_bot(), FileType::Q8_0);
    let len = file.get(GGUF).unwrap().len();
    let err = |r: botcard::Result<Bot>| r.err().expect("an error").to_string();
    let cut = err(file.stream(Dtype::Q8_0, 65536, len / 2));
    assert_eq!(cut, "model.gguf: the file ends before all of its tensors");
    let header = err(file.stream(Dtype::Q8_0, 65536, 100));
    assert!(
        header.starts_with("model.gguf: not a valid GGUF file"),
        "{header}"
    );
    let mut not = file;
    not.set(GGUF, b"PK\x03\x04 not a gguf".to_vec());
    let e = err(not.load());
    assert_eq!(
        e,
        "model.gguf: not a GGUF file (it does not start with GGUF)"
    );
}

#[test]
fn converting_or_training_from_a_gguf_says_it_needs_a_checkpoint() {
    let file = gguf(&default_bot(), FileType::Q8_0);
    let e = file
        .model_files()
        .to_preferred(WeightsFormat::Safetensors(Precision::F16))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with("model.gguf: holds weights already quantized"),
        "{e}"
    );
}

/// The model's weights as held, written as a GGUF (what the page caches after quantizing at
/// load), with `f`'s config and tokenizer.
fn held_folder(f: &Files, bot: &Bot) -> Files {
    let mut bytes = Vec::new();
    let mut largest = 0;
    botcard::gguf::write_held(&bot.model, &mut |piece| {
        bytes.extend_from_slice(piece);
        largest = largest.max(piece.len());
        Ok(())
    })
    .unwrap();
    let layout = botcard::gguf::HeldFile::of(&bot.model).unwrap();
    // A piece is never a whole large tensor (the page's wasm memory would keep that copy's
    // room for good): at most PIECE_BYTES of rows, plus the tensor's padding.
    assert!(
        largest <= botcard::gguf::PIECE_BYTES + 32,
        "a piece of {largest} bytes"
    );
    assert_eq!(
        bytes.len(),
        layout.byte_len(),
        "the length the cache is told"
    );
    let mut out = Files(
        [files::CONFIG, files::TOKENIZER]
            .iter()
            .map(|n| (n.to_string(), f.get(n).unwrap().to_vec()))
            .collect(),
    );
    out.set(GGUF, bytes);
    out
}

#[test]
fn a_model_written_as_held_loads_back_to_the_same_model() {
    let f = converted(&default_bot(), WeightsFormat::Safetensors(Precision::F32));
    for (source, dtype) in [
        (f.clone(), Dtype::Q8_0),
        (f.clone(), Dtype::F32),
        (gguf(&f, FileType::Q4K), Dtype::Q8_0),
        (gguf(&f, FileType::Q4_0), Dtype::Q8_0),
    ] {
        let bot = Bot::load(&source.model_files(), dtype).unwrap();
        let again = Bot::load(&held_folder(&f, &bot).model_files(), dtype).unwrap();
        assert_eq!(again.model.held_as(), bot.model.held_as());
        assert_eq!(logprobs(&again), logprobs(&bot), "{}", bot.model.held_as());
        assert_eq!(again.model.weight_bytes(), bot.model.weight_bytes());
    }
}

#[test]
fn every_ggml_type_dequantizes_as_candles_qtensor_does() {
    use candle_core::quantized::ggml_file::qtensor_from_ggml;
    let cpu = &candle_core::Device::Cpu;
    let n = 4 * 256;
    for dtype in [
        GgmlDType::F32,
        GgmlDType::F16,
        GgmlDType::BF16,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        // Any bytes are some blocks' values (candle cannot quantize to every type).
        let len = n / dtype.block_size() * dtype.type_size();
        let bytes: Vec<u8> = (0..len).map(|i| (i * 151 % 251) as u8).collect();
        let theirs = qtensor_from_ggml(dtype, &bytes, vec![n], cpu)
            .unwrap()
            .dequantize(cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let ours = botcard::ggml::dequantize(dtype, &bytes, n).unwrap();
        let same = ours
            .iter()
            .zip(&theirs)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same && ours.len() == n, "{dtype:?}");
        // A byte short is refused, not read past.
        assert!(
            botcard::ggml::dequantize(dtype, &bytes[1..], n).is_err(),
            "{dtype:?}"
        );
    }
    // q8_1 and q8_K, which candle's reader does not take: ggml's blocks of a scale d (f16 or
    // f32) and a sum in 4 bytes, then i8 values q (32; 256, then 16 sums); d · q.
    for (dtype, len, values) in [(GgmlDType::Q8_1, 36, 32), (GgmlDType::Q8K, 292, 256)] {
        let blocks: Vec<u8> = (0..n / values * len)
            .map(|i| (i * 151 % 251) as u8)
            .collect();
        let ours = botcard::ggml::dequantize(dtype, &blocks, n).unwrap();
        for (b, ys) in blocks.chunks_exact(len).zip(ours.chunks_exact(values)) {
            let d = match dtype {
                GgmlDType::Q8_1 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            };
            let q = &b[4..4 + values];
            let want: Vec<f32> = q.iter().map(|&q| d * f32::from(q as i8)).collect();
            assert_eq!(ys, &want[..], "{dtype:?}");
        }
    }
}
