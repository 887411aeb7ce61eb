//! A model card's README.md: front matter, header, Markdown, sanitizing and mojibake repair.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let card = botcard::card::parse_card(data);
    let _ = botcard::card::repair_mojibake(&card.body_html);
});
