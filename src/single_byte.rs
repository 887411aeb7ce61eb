//! The two single-byte encodings that model cards were mis-decoded with, Windows-1252 and Mac
//! Roman (WHATWG's `windows-1252` and `macintosh`), as tables.
//!
//! Ours rather than encoding_rs's: its one `Encoding` type reaches every legacy decoder, so using
//! it brought all the CJK tables (about 130 KB gzipped) into the page's WebAssembly, for two
//! tables of 128 characters. `tests/card.rs` checks both against encoding_rs for every byte and
//! every character.

/// A single-byte encoding: ASCII below 0x80, `high[b - 0x80]` for byte `b` above.
pub struct SingleByte {
    high: [char; 128],
}

/// WHATWG's `windows-1252` (what browsers decode ISO-8859-1 as).
pub static WINDOWS_1252: SingleByte = SingleByte {
    high: [
        '\u{20ac}', '\u{0081}', '\u{201a}', '\u{0192}', '\u{201e}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{02c6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008d}',
        '\u{017d}', '\u{008f}', '\u{0090}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}',
        '\u{2022}', '\u{2013}', '\u{2014}', '\u{02dc}', '\u{2122}', '\u{0161}', '\u{203a}',
        '\u{0153}', '\u{009d}', '\u{017e}', '\u{0178}', '\u{00a0}', '\u{00a1}', '\u{00a2}',
        '\u{00a3}', '\u{00a4}', '\u{00a5}', '\u{00a6}', '\u{00a7}', '\u{00a8}', '\u{00a9}',
        '\u{00aa}', '\u{00ab}', '\u{00ac}', '\u{00ad}', '\u{00ae}', '\u{00af}', '\u{00b0}',
        '\u{00b1}', '\u{00b2}', '\u{00b3}', '\u{00b4}', '\u{00b5}', '\u{00b6}', '\u{00b7}',
        '\u{00b8}', '\u{00b9}', '\u{00ba}', '\u{00bb}', '\u{00bc}', '\u{00bd}', '\u{00be}',
        '\u{00bf}', '\u{00c0}', '\u{00c1}', '\u{00c2}', '\u{00c3}', '\u{00c4}', '\u{00c5}',
        '\u{00c6}', '\u{00c7}', '\u{00c8}', '\u{00c9}', '\u{00ca}', '\u{00cb}', '\u{00cc}',
        '\u{00cd}', '\u{00ce}', '\u{00cf}', '\u{00d0}', '\u{00d1}', '\u{00d2}', '\u{00d3}',
        '\u{00d4}', '\u{00d5}', '\u{00d6}', '\u{00d7}', '\u{00d8}', '\u{00d9}', '\u{00da}',
        '\u{00db}', '\u{00dc}', '\u{00dd}', '\u{00de}', '\u{00df}', '\u{00e0}', '\u{00e1}',
        '\u{00e2}', '\u{00e3}', '\u{00e4}', '\u{00e5}', '\u{00e6}', '\u{00e7}', '\u{00e8}',
        '\u{00e9}', '\u{00ea}', '\u{00eb}', '\u{00ec}', '\u{00ed}', '\u{00ee}', '\u{00ef}',
        '\u{00f0}', '\u{00f1}', '\u{00f2}', '\u{00f3}', '\u{00f4}', '\u{00f5}', '\u{00f6}',
        '\u{00f7}', '\u{00f8}', '\u{00f9}', '\u{00fa}', '\u{00fb}', '\u{00fc}', '\u{00fd}',
        '\u{00fe}', '\u{00ff}',
    ],
};

/// WHATWG's `macintosh` (Mac Roman).
pub static MAC_ROMAN: SingleByte = SingleByte {
    high: [
        '\u{00c4}', '\u{00c5}', '\u{00c7}', '\u{00c9}', '\u{00d1}', '\u{00d6}', '\u{00dc}',
        '\u{00e1}', '\u{00e0}', '\u{00e2}', '\u{00e4}', '\u{00e3}', '\u{00e5}', '\u{00e7}',
        '\u{00e9}', '\u{00e8}', '\u{00ea}', '\u{00eb}', '\u{00ed}', '\u{00ec}', '\u{00ee}',
        '\u{00ef}', '\u{00f1}', '\u{00f3}', '\u{00f2}', '\u{00f4}', '\u{00f6}', '\u{00f5}',
        '\u{00fa}', '\u{00f9}', '\u{00fb}', '\u{00fc}', '\u{2020}', '\u{00b0}', '\u{00a2}',
        '\u{00a3}', '\u{00a7}', '\u{2022}', '\u{00b6}', '\u{00df}', '\u{00ae}', '\u{00a9}',
        '\u{2122}', '\u{00b4}', '\u{00a8}', '\u{2260}', '\u{00c6}', '\u{00d8}', '\u{221e}',
        '\u{00b1}', '\u{2264}', '\u{2265}', '\u{00a5}', '\u{00b5}', '\u{2202}', '\u{2211}',
        '\u{220f}', '\u{03c0}', '\u{222b}', '\u{00aa}', '\u{00ba}', '\u{03a9}', '\u{00e6}',
        '\u{00f8}', '\u{00bf}', '\u{00a1}', '\u{00ac}', '\u{221a}', '\u{0192}', '\u{2248}',
        '\u{2206}', '\u{00ab}', '\u{00bb}', '\u{2026}', '\u{00a0}', '\u{00c0}', '\u{00c3}',
        '\u{00d5}', '\u{0152}', '\u{0153}', '\u{2013}', '\u{2014}', '\u{201c}', '\u{201d}',
        '\u{2018}', '\u{2019}', '\u{00f7}', '\u{25ca}', '\u{00ff}', '\u{0178}', '\u{2044}',
        '\u{20ac}', '\u{2039}', '\u{203a}', '\u{fb01}', '\u{fb02}', '\u{2021}', '\u{00b7}',
        '\u{201a}', '\u{201e}', '\u{2030}', '\u{00c2}', '\u{00ca}', '\u{00c1}', '\u{00cb}',
        '\u{00c8}', '\u{00cd}', '\u{00ce}', '\u{00cf}', '\u{00cc}', '\u{00d3}', '\u{00d4}',
        '\u{f8ff}', '\u{00d2}', '\u{00da}', '\u{00db}', '\u{00d9}', '\u{0131}', '\u{02c6}',
        '\u{02dc}', '\u{00af}', '\u{02d8}', '\u{02d9}', '\u{02da}', '\u{00b8}', '\u{02dd}',
        '\u{02db}', '\u{02c7}',
    ],
};

impl SingleByte {
    /// `bytes` as text; every byte is a character.
    pub fn decode(&self, bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|&b| match b {
                0..=0x7F => char::from(b),
                _ => self.high[usize::from(b - 0x80)],
            })
            .collect()
    }

    /// The bytes of `s`, or None if a character has no byte here.
    pub fn encode(&self, s: &str) -> Option<Vec<u8>> {
        s.chars()
            .map(|c| match c {
                '\0'..='\x7F' => Some(c as u8),
                _ => self
                    .high
                    .iter()
                    .position(|&h| h == c)
                    .map(|i| 0x80 + i as u8),
            })
            .collect()
    }
}
