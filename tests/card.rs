//! Model cards: the three seed cards the product was specified from, and a hostile one.

use botcard::card::{parse_card, Card};

fn card(path: &str) -> Card {
    let root = env!("CARGO_MANIFEST_DIR");
    parse_card(&std::fs::read(format!("{root}/{path}")).unwrap())
}

fn seed(name: &str) -> Card {
    card(&format!("www/models/huggingtweets/{name}/README.md"))
}

fn no_mojibake(c: &Card) {
    let all = format!("{c:?}");
    for bad in ["ðŸ", "ü§ñ", "„Å", "Ê∞"] {
        assert!(!all.contains(bad), "{bad} left in {all}");
    }
}

#[test]
fn seed_000_cyborg_with_three_users_and_a_repaired_flag() {
    let c = seed("barackobama-karlousm-uofofn");
    assert_eq!(c.badge.as_deref(), Some("🤖 AI CYBORG 🤖"));
    assert_eq!(
        c.title.as_deref(),
        Some("University of OnFoeNem 🇭🇹 & Karlous & Barack Obama")
    );
    assert_eq!(c.handle.as_deref(), Some("@barackobama-karlousm-uofofn"));
    assert_eq!(c.widget_text.as_deref(), Some("My dream is"));
    let names: Vec<&str> = c.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        ["University of OnFoeNem 🇭🇹", "Karlous", "Barack Obama"]
    );
    assert!(c.users.iter().all(|u| u
        .avatar
        .as_deref()
        .unwrap()
        .starts_with("https://pbs.twimg.com/")));
    let kept: Vec<Option<u64>> = c.stats.iter().map(|s| s.kept).collect();
    assert_eq!(kept, [Some(2120), Some(1296), Some(2872)]);
    assert_eq!(c.stats[1].retweets, Some(1736));
    no_mojibake(&c);
}

#[test]
fn seed_001_mac_roman_names_are_repaired() {
    let c = seed("elonmusk-hirox246-hitoshinagai1");
    assert_eq!(c.badge.as_deref(), Some("🤖 AI CYBORG 🤖"));
    let names: Vec<&str> = c.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        ["Elon Musk", "ひろゆき, Hiroyuki Nishimura", "永井均"]
    );
    assert_eq!(c.stats[2].short_tweets, Some(3056));
    assert!(c.body_html.contains("永井均"));
    no_mojibake(&c);
}

#[test]
fn seed_002_hidden_avatar_slots_are_not_users() {
    let c = seed("joebiden");
    assert_eq!(c.badge.as_deref(), Some("🤖 AI BOT 🤖"));
    assert_eq!(c.users.len(), 1);
    assert_eq!(c.users[0].name, "Joe Biden");
    assert_eq!(c.stats[0].downloaded, Some(3250));
    assert!(c.body_html.contains("<table>") && c.body_html.contains("Tweets kept"));
    assert!(c
        .body_html
        .contains(r#"rel="noopener noreferrer nofollow""#));
    no_mojibake(&c);
}

#[test]
fn hostile_card_keeps_no_script_handler_javascript_url_or_style() {
    let c = card("tests/fixtures/cards/hostile/README.md");
    let body = c.body_html.to_ascii_lowercase();
    for bad in [
        "<script",
        "onerror",
        "onmouseover",
        "ontoggle",
        "javascript:",
        "<iframe",
        "<form",
        "<input",
        "<svg",
        "<math",
        "<style",
        "style=",
        "<object",
        "<embed",
        "<meta",
        "<base",
        "__pwned",
    ] {
        assert!(!body.contains(bad), "{bad} survived: {}", c.body_html);
    }
    assert!(
        body.contains("click me") && body.contains("overlay"),
        "harmless text stays"
    );
    assert_eq!(c.thumbnail, None);
    assert_eq!(c.users[0].avatar, None, "javascript: avatar dropped");
    assert_eq!(
        c.users[1].avatar.as_deref(),
        Some("https://example.invalid/a.png")
    );
    assert_eq!(c.badge.as_deref(), Some("🤖 AI BOT 🤖"));
    // The header's text is text: tags in it never become markup.
    assert!(c.title.as_deref().unwrap().contains("Evil <b>Name"));
    assert_eq!(c.stats[0].kept, Some(7));
}

#[test]
fn cards_without_front_matter_or_header_still_render() {
    let c = parse_card(b"# Just a title\n\nSome *text*.");
    assert!(c.body_html.contains("<h1>Just a title</h1>") && c.body_html.contains("<em>text</em>"));
    assert!(c.users.is_empty() && c.badge.is_none() && c.widget_text.is_none());
    let c = parse_card(b"---\nwidget: [unclosed\n---\nbody");
    assert!(c.body_html.contains("body"));
    let c = parse_card(&[0xff, 0xfe, b'h', b'i']);
    assert!(c.body_html.contains("hi"));
}

#[test]
fn single_byte_tables_decode_and_encode_as_encoding_rs_does() {
    use botcard::single_byte::{SingleByte, MAC_ROMAN, WINDOWS_1252};
    let pairs: [(&SingleByte, &'static encoding_rs::Encoding); 2] = [
        (&WINDOWS_1252, encoding_rs::WINDOWS_1252),
        (&MAC_ROMAN, encoding_rs::MACINTOSH),
    ];
    for (ours, theirs) in pairs {
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(
            ours.decode(&every_byte),
            theirs.decode_without_bom_handling(&every_byte).0,
            "{}",
            theirs.name()
        );
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let s = c.to_string();
            let (bytes, _, unmappable) = theirs.encode(&s);
            let expected = (!unmappable).then(|| bytes.into_owned());
            assert_eq!(
                ours.encode(&s),
                expected,
                "{} U+{:04X}",
                theirs.name(),
                c as u32
            );
        }
    }
}

#[test]
fn header_reads_text_and_avatars_through_entities_scripts_and_deep_nesting() {
    let header = concat!(
        "<div class=\"flex\">",
        "<div style=\"display:inherit\"><div lang=\"en\" title=\"t\" style=\"background-image: url('https://a.invalid/x.png?a=1&amp;b=2'); --x: a>b\"></div></div>",
        "<div style=\"display:none; background-image: url('https://a.invalid/hidden.png')\"></div>",
        "</div>",
        "<div><div>🤖 AI BOT 🤖<script>alert('no')</script></div>",
        "<div>Tom &amp; Jerry&nbsp;&lt;3 <span>&quot;Q&quot;</span><style>p{}</style><template>t</template></div>",
        "<div>@tomjerry</div></div>\n",
    );
    let c = parse_card(format!("{header}\n# Body\n").as_bytes());
    assert_eq!(c.badge.as_deref(), Some("🤖 AI BOT 🤖"));
    assert_eq!(c.title.as_deref(), Some("Tom & Jerry <3 \"Q\""));
    assert_eq!(c.handle.as_deref(), Some("@tomjerry"));
    let avatars: Vec<_> = c.users.iter().map(|u| u.avatar.as_deref()).collect();
    assert_eq!(avatars, [Some("https://a.invalid/x.png?a=1&b=2")]);

    // A header nested far deeper than any card: parsed, not a crash.
    let deep = format!(
        "{}@deep{}\n",
        "<div>".repeat(20_000),
        "</div>".repeat(20_000)
    );
    assert_eq!(parse_card(deep.as_bytes()).handle.as_deref(), Some("@deep"));
}

/// The XSS corpus (tests/fixtures/cards/xss/payloads.txt), one payload per entry.
fn xss_payloads() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let text =
        std::fs::read_to_string(format!("{root}/tests/fixtures/cards/xss/payloads.txt")).unwrap();
    let mut blocks = text.split("\n%%\n");
    blocks.next(); // the file's comment
    blocks
        .map(|b| b.trim_end_matches('\n').to_owned())
        .collect()
}

/// Every event-handler attribute (tests/fixtures/cards/xss/event-handlers.txt), each on an HTML
/// element, an SVG element and a self-triggering image.
fn event_handler_payloads() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let names = std::fs::read_to_string(format!(
        "{root}/tests/fixtures/cards/xss/event-handlers.txt"
    ))
    .unwrap();
    names
        .split_whitespace()
        .flat_map(|h| {
            [
                format!("<div {h}=\"alert(1)\" tabindex=\"1\">{h}</div>"),
                format!("<svg><rect {h}=alert(1) width=9 height=9 /></svg>"),
                format!("<img src=x {h}=alert(1)>"),
            ]
        })
        .collect()
}

/// The tags of html5ever's serialization (what ammonia writes): each tag's name and its
/// attributes with their values' entities decoded. Text never holds a `<` there (it is
/// written `&lt;`), so every `<` starts a tag.
fn tags(html: &str) -> Vec<(String, Vec<(String, String)>)> {
    let decode = botcard::card::serialized_text;
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>').expect("a closed tag");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('/') {
            continue;
        }
        let tag = tag.trim_end_matches('/').trim_end();
        let (name, mut attrs) = tag.split_once(' ').unwrap_or((tag, ""));
        let mut list = Vec::new();
        while !attrs.trim_start().is_empty() {
            attrs = attrs.trim_start();
            let eq = attrs.find("=\"").expect("attributes are name=\"value\"");
            let close = attrs[eq + 2..].find('"').expect("a closed value") + eq + 2;
            list.push((attrs[..eq].to_owned(), decode(&attrs[eq + 2..close])));
            attrs = &attrs[close + 1..];
        }
        out.push((name.to_owned(), list));
    }
    out
}

/// Legitimate content that must survive beside the payloads.
const LEGIT: &str = "\n\n## Training data\n\n| Data | Good |\n| --- | --- |\n| Tweets downloaded | 10 |\n| Retweets | 1 |\n| Short tweets | 2 |\n| Tweets kept | 7 |\n\nSee [the pipeline](https://github.com/borisdayma/huggingtweets) and ![a diagram](https://example.com/pipeline.png).\n";

#[test]
fn every_xss_payload_leaves_no_script_handler_dangerous_url_style_or_clobbering_name() {
    let payloads: Vec<String> = xss_payloads()
        .into_iter()
        .chain(event_handler_payloads())
        .collect();
    assert!(payloads.len() > 100 + 3 * 120, "{}", payloads.len());
    // Allowed elements: what Markdown writes, and ammonia's harmless defaults.
    let dangerous_tags = [
        "script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "form",
        "input", "button", "select", "textarea", "keygen", "isindex", "link", "meta", "base",
        "svg", "math", "template", "noscript", "xmp", "title", "body", "html", "head", "video",
        "audio", "source", "marquee", "portal", "set", "animate", "xss",
    ];
    for payload in &payloads {
        // Alone, after a paragraph, and inside a list item: Markdown parses HTML blocks by context.
        for card in [
            payload.clone(),
            format!("Some text.\n\n{payload}"),
            format!("- item {payload}"),
        ] {
            // The legitimate content first: a payload may rightly swallow what follows it (an
            // unclosed <textarea> or comment), but never what came before.
            let c = parse_card(format!("{LEGIT}\n{card}").as_bytes());
            for (name, attrs) in tags(&c.body_html) {
                assert!(
                    !dangerous_tags.contains(&name.as_str()),
                    "<{name}> kept from {payload:?}: {}",
                    c.body_html
                );
                for (attr, value) in attrs {
                    assert!(
                        [
                            "href", "src", "alt", "title", "rel", "lang", "align", "colspan",
                            "rowspan", "start", "type", "width", "height"
                        ]
                        .contains(&attr.as_str())
                            && !attr.starts_with("on"),
                        "{name} keeps `{attr}` from {payload:?}: {}",
                        c.body_html
                    );
                    if attr == "href" || attr == "src" {
                        let scheme: String = value
                            .chars()
                            .filter(|c| !c.is_whitespace() && !c.is_control())
                            .take_while(|c| *c != ':')
                            .collect::<String>()
                            .to_ascii_lowercase();
                        assert!(
                            value.starts_with("https://")
                                || value.starts_with("http://")
                                || value.starts_with("mailto:"),
                            "{name} {attr}={value:?} ({scheme}) from {payload:?}"
                        );
                    }
                }
            }
            // The legitimate content is still there.
            assert_eq!(c.stats.first().and_then(|s| s.kept), Some(7), "{payload:?}");
            assert!(
                c.body_html
                    .contains(r#"<a href="https://github.com/borisdayma/huggingtweets" rel="noopener noreferrer nofollow">the pipeline</a>"#)
                    && c.body_html.contains(r#"<img src="https://example.com/pipeline.png" alt="a diagram">"#),
                "{payload:?}: {}",
                c.body_html
            );
        }
    }
}

#[test]
fn hostile_front_matter_and_header_fields_stay_text_and_unsafe_avatars_are_dropped() {
    let names = [
        "\"><script>alert(1)</script>",
        "</div><img src=x onerror=alert(1)>",
        "<svg onload=alert(1)>",
        "{{constructor.constructor('alert(1)')()}}",
        "\u{202e}nib.exe\u{200b}",
    ];
    let avatars = [
        ("url('javascript:alert(1)')", None),
        ("url(&quot;javascript:alert(1)&quot;)", None),
        ("url(JaVaScRiPt:alert(1))", None),
        ("url('data:image/svg+xml,<svg onload=alert(1)>')", None),
        ("url('vbscript:msgbox(1)')", None),
        ("url('//evil.invalid/x.png')", None),
        (
            "url('https://ok.invalid/a.png'), url('javascript:alert(1)')",
            Some("https://ok.invalid/a.png"),
        ),
    ];
    for name in names {
        for (css, want) in avatars {
            let escaped = name
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            let card = format!(
                "---\nwidget:\n- text: '{prompt}'\nthumbnail: \"javascript:alert(1)\"\nlanguage: \"<script>\"\n---\n\n\
                 <div class=\"inline-flex flex-col\">\n<div class=\"flex\">\n<div style=\"display:inherit; background-image: {css}\"></div>\n</div>\n\
                 <div style=\"text-align: center\">🤖 AI BOT 🤖</div>\n<div>{escaped}</div>\n<div>@{escaped}</div>\n</div>\n{LEGIT}",
                prompt = name.replace('\'', "''"),
            );
            let c = parse_card(card.as_bytes());
            assert_eq!(c.title.as_deref(), Some(name), "the name is text");
            assert_eq!(c.handle.as_deref(), Some(format!("@{name}").as_str()));
            assert_eq!(c.widget_text.as_deref(), Some(name), "the prompt is text");
            assert_eq!(c.thumbnail, None);
            let avatar = c.users.first().and_then(|u| u.avatar.as_deref());
            assert_eq!(avatar, want, "{css}");
            assert_eq!(c.stats.first().and_then(|s| s.kept), Some(7));
        }
    }
}
