//! Tokenizer parity with HF (both file layouts) and streaming detokenization.

use botcard::{TextStream, Tokenizer};

use crate::util::{reference, u32s, Files};

fn both() -> [(&'static str, Tokenizer); 2] {
    [
        (
            "tokenizer.json",
            Files::of("tiny-st").model_files().tokenizer().unwrap(),
        ),
        (
            "vocab.json + merges.txt",
            Files::of("tiny-2021").model_files().tokenizer().unwrap(),
        ),
    ]
}

#[test]
fn ids_match_transformers_for_tricky_strings() {
    let r = reference();
    for (layout, tok) in both() {
        for case in r["tokenizer"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(
                tok.encode(text).unwrap(),
                u32s(&case["ids"]),
                "{layout}: {text:?}"
            );
            let tokens: Vec<String> = case["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(
                tok.id_strings(&u32s(&case["ids"])),
                tokens,
                "{layout}: {text:?}"
            );
        }
    }
}

#[test]
fn both_layouts_make_the_same_tokenizer() {
    let [(_, json), (_, vocab_merges)] = both();
    // (Not assert_eq!: a failure would print two 2 MB texts.)
    assert!(vocab_merges.to_json().unwrap() == json.to_json().unwrap());
}

#[test]
fn decode_skips_special_tokens_and_restores_the_text() {
    let r = reference();
    for (layout, tok) in both() {
        for case in r["tokenizer"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let expected = text.replace("<|endoftext|>", "");
            assert_eq!(
                tok.decode(&u32s(&case["ids"])),
                expected,
                "{layout}: {text:?}"
            );
        }
    }
}

#[test]
fn streaming_never_emits_a_broken_character() {
    let (_, tok) = &both()[0];
    let text = "emoji 🤖🇹🇹 and 👍🏽, 日本語のテキスト 永井均!";
    let ids = tok.encode(text).unwrap();
    let mut stream = TextStream::default();
    let mut pieces = Vec::new();
    for &id in &ids {
        let piece = stream.push(tok, id);
        assert!(!piece.contains('\u{FFFD}'), "piece {piece:?}");
        pieces.push(piece);
    }
    pieces.push(stream.finish());
    assert_eq!(pieces.concat(), text);
    // The robot emoji is three tokens: the first two complete nothing.
    assert!(pieces.iter().any(|p| p.is_empty()));
}

#[test]
fn streaming_turns_invalid_bytes_into_replacement_characters_like_a_full_decode() {
    let (_, tok) = &both()[0];
    // Token 97 is the lone byte 0xA4 (a UTF-8 continuation byte): invalid on its own.
    let ids = [40, 97, 97, 1101];
    let mut stream = TextStream::default();
    let mut s: String = ids.iter().map(|&id| stream.push(tok, id)).collect();
    s.push_str(&stream.finish());
    assert_eq!(s, tok.decode(&ids));
    assert_eq!(s, "I\u{FFFD}\u{FFFD}'m");
}

#[test]
fn unfinished_character_at_the_end_becomes_one_replacement() {
    let (_, tok) = &both()[0];
    let ids = tok.encode("🤖").unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(tok.decode(&ids[..2]), "\u{FFFD}");
}

#[test]
fn a_trained_byte_level_bpe_is_small_round_trips_and_keeps_end_of_text_special() {
    let texts: Vec<String> = (0..300)
        .map(|i| {
            format!("My dream is to sail the sea, day {i}. The weather today is sunny and warm!")
        })
        .collect();
    let tok = Tokenizer::train_byte_level_bpe(&texts, 400).unwrap();
    assert!(
        tok.vocab_size() <= 400 && tok.vocab_size() > 257,
        "{}",
        tok.vocab_size()
    );
    let eos = tok.token_to_id("<|endoftext|>").unwrap();
    // Learned merges make common words one token; anything else still encodes byte by byte.
    assert!(tok.encode(" dream").unwrap().len() <= 2);
    for text in [
        "My dream is to sail",
        "emoji 🤖 and 永井均 never seen",
        "<|endoftext|>hi",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(
            tok.decode(&ids),
            text.replace("<|endoftext|>", ""),
            "{text}"
        );
    }
    assert_eq!(tok.encode("<|endoftext|>hi").unwrap()[0], eos);
    // It survives a round trip through tokenizer.json.
    let again = Tokenizer::from_tokenizer_json(tok.to_json().unwrap().as_bytes()).unwrap();
    assert_eq!(
        again.encode("My dream is").unwrap(),
        tok.encode("My dream is").unwrap()
    );
    assert!(Tokenizer::train_byte_level_bpe(&texts, 100).is_err());
}
