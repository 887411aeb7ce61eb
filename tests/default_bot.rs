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

/// q8_0 (the default in the tab and the CLI) must keep the bot's text: on held-out posts its
/// perplexity moves by less than 1% and no token's log-probability by more than 0.2.
#[test]
fn q8_0_keeps_the_default_bots_text() {
    let files = Files::read(&dir());
    let exact = Bot::load(&files.model_files(), botcard::Dtype::F32).unwrap();
    let quantized = Bot::load(&files.model_files(), botcard::Dtype::Q8_0).unwrap();
    assert!(
        quantized.model.weight_bytes() * 3 < exact.model.weight_bytes(),
        "q8_0 holds a quarter of f32's bytes (plus scales and f32 norms)"
    );
    let text = include_str!("bench/heldout.txt");
    let (mut sum_exact, mut sum_q, mut n, mut worst) = (0f64, 0f64, 0usize, 0f32);
    for line in text.lines() {
        let ids = exact.tokenizer.encode(line).unwrap();
        let a = exact.model.logprobs(&ids).unwrap();
        let b = quantized.model.logprobs(&ids).unwrap();
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs());
            sum_exact += f64::from(*x);
            sum_q += f64::from(*y);
            n += 1;
        }
    }
    let change = ((sum_exact - sum_q) / n as f64).exp() - 1.0;
    assert!(
        change.abs() < 0.01,
        "perplexity changed by {:.3}%",
        change * 100.0
    );
    assert!(worst < 0.2, "a log-probability moved by {worst}");
}
