//! Loading while the weights arrive (`botcard::stream`): the same bot as from the whole file,
//! whatever the pieces, and one sentence when the file is cut short or disagrees with the config.

use botcard::stream::BotLoader;
use botcard::{Bot, Dtype};

use crate::util::Files;

fn folder(name: &str) -> Files {
    if name == "default" {
        Files::read(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default"))
    } else {
        Files::of(name)
    }
}

/// `name`'s files streamed to a loader ([`Files::stream`]).
fn streamed(name: &str, dtype: Dtype, piece: usize, limit: usize) -> botcard::Result<Bot> {
    folder(name).stream(dtype, piece, limit)
}

#[test]
fn a_streamed_model_equals_the_whole_file_model_whatever_the_pieces() {
    for (name, dtype) in [
        ("default", Dtype::Q8_0),
        ("default", Dtype::F32),
        ("tiny-st", Dtype::F32),
    ] {
        let whole = Bot::load(&folder(name).model_files(), dtype).unwrap();
        let ids = whole
            .tokenizer
            .encode("My dream is to see the sea once more")
            .unwrap();
        let want = whole.model.logprobs(&ids).unwrap();
        for piece in [997, 65536, usize::MAX] {
            let bot = streamed(name, dtype, piece, usize::MAX).unwrap();
            assert_eq!(
                bot.model.logprobs(&ids).unwrap(),
                want,
                "{name} {dtype:?} in pieces of {piece}"
            );
            assert_eq!(bot.model.weight_bytes(), whole.model.weight_bytes());
        }
    }
}

#[test]
fn a_model_streamed_one_byte_at_a_time_is_the_same_model() {
    let whole = Bot::load(&folder("tiny-st").model_files(), Dtype::F32).unwrap();
    let bot = streamed("tiny-st", Dtype::F32, 1, usize::MAX).unwrap();
    let ids = whole.tokenizer.encode("My dream is").unwrap();
    assert_eq!(
        bot.model.logprobs(&ids).unwrap(),
        whole.model.logprobs(&ids).unwrap()
    );
}

#[test]
fn a_stream_cut_short_is_one_sentence() {
    for limit in [5, 100, 1_000_000] {
        let err = streamed("default", Dtype::Q8_0, 4096, limit)
            .err()
            .expect("incomplete");
        let msg = err.to_string();
        assert!(
            msg.starts_with("model.safetensors: the file ends before"),
            "{msg}"
        );
    }
}

#[test]
fn a_streamed_tensor_that_disagrees_with_the_config_is_refused() {
    // tiny-st's weights under relu-st's config (another width).
    let mut loader = BotLoader::new(Dtype::Q8_0);
    loader.add(
        "config.json",
        folder("relu-st").model_files().config().unwrap().to_vec(),
    );
    let tiny = folder("tiny-st");
    let bytes = tiny.model_files().get("model.safetensors").unwrap();
    let err = loader
        .push("model.safetensors", bytes)
        .expect_err("refused");
    assert!(err.to_string().contains("config.json implies"), "{err}");
}

#[test]
fn only_safetensors_streams_and_it_needs_the_config_first() {
    let mut loader = BotLoader::new(Dtype::Q8_0);
    assert!(loader.push("pytorch_model.bin", b"x").is_err());
    let err = loader.push("model.safetensors", b"x").err().unwrap();
    assert!(err.to_string().contains("config.json"), "{err}");
}
