//! The bundled default bot (`www/models/default/`, made by `./build.sh default-bot`): small enough
//! to ship, an honest card, and English rather than word salad.

use std::path::{Path, PathBuf};

use botcard::card::parse_card;
use botcard::Bot;

use crate::util::Files;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default")
}

fn bot() -> Bot {
    Files::read(&dir()).load().expect("the default bot loads")
}

/// A number in the card's "| label | value |" row.
fn figure(card: &str, label: &str) -> f64 {
    let row = card
        .lines()
        .find(|l| l.starts_with(&format!("| {label} |")))
        .unwrap_or_else(|| panic!("no {label} row"));
    row.split('|').nth(2).unwrap().trim().parse().unwrap()
}

#[test]
fn default_bot_is_at_most_25_mb_with_every_file_the_page_needs() {
    let mut total = 0;
    for name in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
    ] {
        total += std::fs::metadata(dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .len();
    }
    assert!(total <= 25_000_000, "{total} bytes");
}

#[test]
fn default_bot_card_names_its_source_and_beats_the_unigram_baseline() {
    let md = std::fs::read_to_string(dir().join("README.md")).unwrap();
    let card = parse_card(md.as_bytes());
    assert_eq!(card.handle.as_deref(), Some("@fortune"));
    assert_eq!(card.widget_text.as_deref(), Some("My dream is"));
    let s = &card.stats[0];
    assert_eq!(
        s.downloaded.unwrap(),
        s.retweets.unwrap() + s.short_tweets.unwrap() + s.kept.unwrap()
    );
    for source in ["fortunes-min", "BSD", "./build.sh default-bot"] {
        assert!(md.contains(source), "the card names {source}");
    }
    let (model, unigram) = (
        figure(&md, "Held-out perplexity"),
        figure(&md, "Unigram baseline perplexity"),
    );
    assert!(model * 4.0 < unigram, "{model} vs unigram {unigram}");
    assert_eq!(md.matches("\n> My dream is").count(), 3, "three samples");
}

#[test]
fn default_bot_finds_english_far_likelier_than_the_same_words_reversed() {
    // Sentences written for this test, not taken from the training fortunes.
    let english = [
        "My dream is to travel around the world and meet new people.",
        "I think the weather will be nice tomorrow, so we should go outside.",
        "A good friend will always tell you the truth, even when it hurts.",
        "There is nothing more important than a warm cup of coffee in the morning.",
        "The cat sat by the window and watched the rain all day long.",
    ];
    let bot = bot();
    let perplexity = |texts: &[String]| {
        let (mut nll, mut n) = (0.0f64, 0usize);
        for t in texts {
            let ids = bot.tokenizer.encode(t).unwrap();
            let lp = bot.model.logprobs(&ids).unwrap();
            nll -= lp.iter().map(|&l| f64::from(l)).sum::<f64>();
            n += lp.len();
        }
        (nll / n as f64).exp()
    };
    let forward: Vec<String> = english.iter().map(|s| s.to_string()).collect();
    let reversed: Vec<String> = english
        .iter()
        .map(|s| s.split(' ').rev().collect::<Vec<_>>().join(" "))
        .collect();
    let (a, b) = (perplexity(&forward), perplexity(&reversed));
    eprintln!("default bot perplexity: English {a:.1}, words reversed {b:.1}");
    assert!(a * 3.0 < b, "English {a} vs reversed {b}");
}
