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
    // tiny's weights (safetensors, and the 2021 .bin) under relu-st's config (another width).
    for (model, file) in [
        ("tiny-st", "model.safetensors"),
        ("tiny-2021", "pytorch_model.bin"),
    ] {
        let mut loader = BotLoader::new(Dtype::Q8_0);
        loader
            .add(
                "config.json",
                folder("relu-st").model_files().config().unwrap().to_vec(),
            )
            .unwrap();
        let tiny = folder(model);
        let bytes = tiny.model_files().get(file).unwrap();
        let err = loader.push(file, bytes).expect_err("refused");
        assert!(
            err.to_string().contains("config.json implies"),
            "{file}: {err}"
        );
    }
}

#[test]
fn only_weights_files_stream_and_they_need_the_config_first() {
    let mut loader = BotLoader::new(Dtype::Q8_0);
    assert!(loader.push("config.json", b"{}").is_err());
    assert!(loader.push("vocab.json", b"{}").is_err());
    for weights in ["model.safetensors", "model.gguf", "pytorch_model.bin"] {
        let err = loader.push(weights, b"x").err().unwrap();
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}

/// The entries of a `torch.save` zip written again by the `zip` crate (sizes in the headers, no
/// data descriptors), `method`-compressed, the `data/` storages first when `storages_first`.
fn rezipped(bin: &[u8], method: zip::CompressionMethod, storages_first: bool) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bin)).unwrap();
    let mut entries = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        entries.push((f.name().unwrap().into_owned(), data));
    }
    if storages_first {
        entries.sort_by_key(|(n, _)| !n.contains("/data/"));
    }
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in entries {
        zip.start_file(name, opts).unwrap();
        zip.write_all(&data).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

/// The greedy logprobs of `files` loaded whole (the CLI's way) and streamed in each piece size.
fn assert_streams_as_whole(files: &Files, dtype: Dtype, pieces: &[usize], what: &str) {
    let whole = Bot::load(&files.model_files(), dtype).unwrap();
    let ids = whole
        .tokenizer
        .encode("My dream is to see the sea once more")
        .unwrap();
    let want = whole.model.logprobs(&ids).unwrap();
    for &piece in pieces {
        let bot = files
            .stream(dtype, piece, usize::MAX)
            .unwrap_or_else(|e| panic!("{what} in pieces of {piece}: {e}"));
        assert_eq!(
            bot.model.logprobs(&ids).unwrap(),
            want,
            "{what} {dtype:?} in pieces of {piece}"
        );
        assert_eq!(bot.model.weight_bytes(), whole.model.weight_bytes());
    }
}

#[test]
fn a_streamed_pytorch_bin_equals_the_whole_file_model_whatever_the_pieces() {
    // tiny-2021: f32 storages, `transformer.` names, `lm_head` stored, attn.bias masks;
    // gelu-2021: f16 storages, bare names. Both as torch writes them (data descriptors).
    for (name, dtype) in [
        ("tiny-2021", Dtype::Q8_0),
        ("tiny-2021", Dtype::F32),
        ("gelu-2021", Dtype::F32),
    ] {
        assert_streams_as_whole(&Files::of(name), dtype, &[997, 65536, usize::MAX], name);
    }
    assert_streams_as_whole(&Files::of("gelu-2021"), Dtype::Q8_0, &[1], "gelu-2021");
}

#[test]
fn a_pytorch_bin_zipped_by_another_writer_streams_too() {
    use zip::CompressionMethod::{Deflated, Stored};
    let bin = Files::of("tiny-2021")
        .get("pytorch_model.bin")
        .unwrap()
        .to_vec();
    for (method, storages_first) in [
        (Stored, false),
        (Deflated, false),
        (Stored, true),
        (Deflated, true),
    ] {
        let mut files = Files::of("tiny-2021");
        files.set("pytorch_model.bin", rezipped(&bin, method, storages_first));
        let what = format!("{method:?}, storages first: {storages_first}");
        assert_streams_as_whole(&files, Dtype::Q8_0, &[1009, usize::MAX], &what);
    }
}

#[test]
fn a_pytorch_bin_cut_short_is_one_sentence() {
    let files = Files::of("tiny-2021");
    for limit in [5, 100, 3000, 100_000, 3_000_000] {
        let err = files
            .stream(Dtype::Q8_0, 4096, limit)
            .err()
            .expect("incomplete");
        let msg = err.to_string();
        assert!(
            msg.starts_with("pytorch_model.bin: the file ends before"),
            "{limit}: {msg}"
        );
    }
}

#[test]
fn a_storage_longer_or_shorter_than_its_pickle_says_is_refused() {
    // The descriptor after the second storage (`data/1`) claims one byte more.
    let mut bin = Files::of("tiny-2021")
        .get("pytorch_model.bin")
        .unwrap()
        .to_vec();
    let name = b"pytorch_model/data/2";
    let header = bin.windows(name.len()).position(|w| w == name).unwrap() - 30;
    // PK\x07\x08, crc, compressed size, size: the 16 bytes before the next entry's header.
    let at = header - 8;
    let n = u32::from_le_bytes(bin[at..at + 4].try_into().unwrap()) + 1;
    bin[at..at + 4].copy_from_slice(&n.to_le_bytes());
    let mut files = Files::of("tiny-2021");
    files.set("pytorch_model.bin", bin);
    let err = files
        .stream(Dtype::Q8_0, 4096, usize::MAX)
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("where its pickle declares"),
        "{err}"
    );
}

#[test]
fn a_streamed_pytorch_bin_that_is_not_one_is_one_sentence() {
    let mut legacy = vec![0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46];
    legacy.resize(64, 0);
    for (bytes, want) in [
        (legacy, "legacy"),
        (
            b"PK\x05\x06 not really a zip".to_vec(),
            "not a torch.save zip archive",
        ),
    ] {
        let mut files = Files::of("tiny-2021");
        files.set("pytorch_model.bin", bytes);
        let err = files
            .stream(Dtype::Q8_0, 7, usize::MAX)
            .err()
            .expect("refused");
        assert!(err.to_string().starts_with("pytorch_model.bin: "), "{err}");
        assert!(err.to_string().contains(want), "{err}");
    }
}

#[test]
fn a_weights_file_added_whole_loads_as_one_piece_and_no_weights_is_one_sentence() {
    for (name, weights) in [
        ("tiny-st", "model.safetensors"),
        ("tiny-2021", "pytorch_model.bin"),
    ] {
        let files = folder(name);
        let whole = Bot::load(&files.model_files(), Dtype::Q8_0).unwrap();
        let mut loader = BotLoader::new(Dtype::Q8_0);
        let mut without_weights = BotLoader::new(Dtype::Q8_0);
        for n in botcard::files::all_names() {
            if let Some(bytes) = files.get(n) {
                loader.add(n, bytes.to_vec()).unwrap();
                if n != weights {
                    without_weights.add(n, bytes.to_vec()).unwrap();
                }
            }
        }
        let ids = whole.tokenizer.encode("My dream is").unwrap();
        let bot = loader.finish().unwrap();
        assert_eq!(
            bot.model.logprobs(&ids).unwrap(),
            whole.model.logprobs(&ids).unwrap()
        );
        let err = without_weights
            .finish()
            .err()
            .expect("no weights")
            .to_string();
        assert!(err.contains("model.safetensors"), "{name}: {err}");
    }
}

#[test]
fn a_web_page_in_place_of_any_model_file_is_one_sentence_naming_it() {
    let pages: [&[u8]; 3] = [
        b"<!DOCTYPE html><html><body>404: this page could not be found</body></html>",
        b"\xEF\xBB\xBF\n  <html lang=en><title>Error</title>",
        b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>",
    ];
    for (model, names) in [
        (
            "tiny-2021",
            &[
                "config.json",
                "pytorch_model.bin",
                "vocab.json",
                "merges.txt",
            ][..],
        ),
        ("tiny-st", &["model.safetensors", "tokenizer.json"][..]),
    ] {
        for name in names {
            for page in pages {
                let mut files = Files::of(model);
                files.set(name, page.to_vec());
                let want = format!(
                    "{name} is a web page, not the model's file: the hub sent an error page in its place."
                );
                let whole = files.load().err().expect("refused").to_string();
                assert_eq!(whole, want, "{model} loaded whole");
                for piece in [1, 7, 4096] {
                    let streamed = files.stream(Dtype::Q8_0, piece, usize::MAX).err();
                    assert_eq!(
                        streamed.expect("refused").to_string(),
                        want,
                        "{model}, {piece}"
                    );
                }
            }
        }
    }
    // Model files that start with `<` but are no page still load: a merges.txt of markup tokens.
    assert!(!botcard::files::is_web_page(b"< >\n<h tml\n"));
    assert!(!botcard::files::is_web_page(b"<"));
}

/// `files` given to a loader in the order `names`, the weights in one piece.
fn load_in_order(files: &Files, names: &[&str]) -> botcard::Result<Bot> {
    let mut loader = BotLoader::new(Dtype::F32);
    for n in names {
        loader.add(n, files.get(n).unwrap().to_vec())?;
    }
    loader.finish()
}

/// The loader makes the tokenizer as soon as its files are in (so its making's memory is reused
/// by the weights), yet the bot gets the tokenizer the folder chooses at the end: a
/// `tokenizer.json` that comes after `vocab.json` + `merges.txt` is preferred, broken or not.
#[test]
fn the_tokenizer_made_early_is_the_one_the_folder_chooses() {
    let mut f = folder("tiny-st");
    let old = folder("tiny-2021");
    f.set("vocab.json", old.get("vocab.json").unwrap().to_vec());
    f.set("merges.txt", old.get("merges.txt").unwrap().to_vec());
    let order = [
        "config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
        "model.safetensors",
    ];
    let whole = Bot::load(&f.model_files(), Dtype::F32).unwrap();
    let text = "My dream is to see the sea once more";
    let bot = load_in_order(&f, &order).unwrap();
    assert_eq!(
        bot.tokenizer.encode(text).unwrap(),
        whole.tokenizer.encode(text).unwrap()
    );

    // A broken vocab.json is passed by for the tokenizer.json that follows it.
    let mut broken_old = f.clone();
    broken_old.set("vocab.json", b"not json".to_vec());
    load_in_order(&broken_old, &order).unwrap();

    // A broken tokenizer.json is reported, though vocab.json + merges.txt made one before it.
    let mut broken_new = f.clone();
    broken_new.set("tokenizer.json", b"{}".to_vec());
    let e = load_in_order(&broken_new, &order)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    assert_eq!(
        e,
        Bot::load(&broken_new.model_files(), Dtype::F32)
            .err()
            .unwrap()
            .to_string()
    );
}
