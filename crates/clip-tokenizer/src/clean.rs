//! Text cleaning as done before CLIP tokenisation: `ftfy.fix_text`, `html.unescape` twice, strip,
//! whitespace collapse.
//!
//! Hand-written because no Rust crate ports ftfy, and token ids only match open_clip's when the text
//! is cleaned the same way first (checked on a 5,200-line corpus).
//!
//! `fix_text` implements the ftfy 6 steps that matter for captions, in ftfy's order and repeated to a
//! fixed point: HTML entities (when the text has no `<`), mojibake from UTF-8 read as Windows-1252 or
//! Latin-1, C1 controls, Latin ligatures, full/half-width forms, curly quotes, line breaks, terminal
//! escapes, control characters, and NFC. ftfy's statistical "badness" score is approximated by the
//! character pairs that mojibake produces (see [`looks_like_mojibake`]).

use std::borrow::Cow;
use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;

/// `ftfy.fix_text` with its default configuration (see the module docs for what is covered).
pub fn fix_text(text: &str) -> String {
    // ftfy fixes each line on its own
    let mut out = String::with_capacity(text.len());
    for segment in text.split_inclusive('\n') {
        out.push_str(&fix_segment(segment));
    }
    out
}

fn fix_segment(text: &str) -> String {
    let unescape = !text.contains('<');
    let mut text = text.to_owned();
    loop {
        let orig = text.clone();
        if unescape {
            text = unescape_html_strict(&text);
        }
        text = fix_encoding(&text);
        text = fix_c1_controls(&text);
        text = map_chars(&text, |c| ligature(c).map(Cow::Borrowed));
        text = map_chars(&text, width);
        text = map_chars(&text, |c| match c {
            '\u{02bc}' | '\u{2018}'..='\u{201b}' => Some(Cow::Borrowed("'")),
            '\u{201c}'..='\u{201f}' => Some(Cow::Borrowed("\"")),
            _ => None,
        });
        text = fix_line_breaks(&text);
        text = terminal_escapes().replace_all(&text, "").into_owned();
        text.retain(|c| !is_control(c));
        text = text.nfc().collect();
        if text == orig {
            return text;
        }
    }
}

/// The reference's `basic_clean`: `ftfy.fix_text`, `html.unescape` twice, strip.
pub fn basic_clean(text: &str) -> String {
    let fixed = fix_text(text);
    let once = htmlize::unescape(fixed.as_str()).into_owned();
    let twice = htmlize::unescape(once.as_str()).into_owned();
    py_strip(&twice).to_owned()
}

/// The reference's `whitespace_clean`: `" ".join(text.split())`.
pub fn whitespace_clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(is_py_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Python's `str.isspace`: Unicode White_Space plus the ASCII separators U+001C..U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

fn map_chars(text: &str, f: impl Fn(char) -> Option<Cow<'static, str>>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match f(c) {
            Some(s) => out.push_str(&s),
            None => out.push(c),
        }
    }
    out
}

fn ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// ftfy's width map: U+3000 and the NFKC forms of U+FF01..U+FFEF.
fn width(c: char) -> Option<Cow<'static, str>> {
    if c == '\u{3000}' {
        return Some(Cow::Borrowed(" "));
    }
    if ('\u{ff01}'..='\u{ffef}').contains(&c) {
        let alt: String = std::iter::once(c).nfkc().collect();
        if alt.chars().ne(std::iter::once(c)) {
            return Some(Cow::Owned(alt));
        }
    }
    None
}

fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

fn is_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
        | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

fn terminal_escapes() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\x1b\[((?:\d|;)*)([a-zA-Z])").expect("valid regex"))
}

/// ftfy's `unescape_html`: only entities that end in a semicolon are decoded.
fn unescape_html_strict(text: &str) -> String {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("valid regex"));
    re.replace_all(text, |caps: &regex::Captures| {
        let entity = &caps[0];
        let decoded = htmlize::unescape(entity);
        if decoded != entity && !decoded.contains(';') {
            return decoded.into_owned();
        }
        // ftfy also reads all-caps names of Latin letters (`&EACUTE;`)
        let lower = entity.to_lowercase();
        let dec_lower = htmlize::unescape(lower.as_str());
        if entity.len() > 3 && dec_lower != lower && !dec_lower.contains(';') {
            return dec_lower.to_uppercase();
        }
        entity.to_owned()
    })
    .into_owned()
}

/// Windows-1252 bytes 0x80..0x9F as Unicode (ftfy's "sloppy" codec keeps the five undefined bytes
/// as the C1 code points of the same value).
const CP1252_HIGH: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}',
    '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
];

fn single_byte(c: char) -> Option<u8> {
    let u = c as u32;
    // Latin-1 covers U+0000..U+00FF (C1 controls included); Windows-1252 adds its 0x80..0x9F glyphs
    if u <= 0xff {
        return Some(u as u8);
    }
    CP1252_HIGH
        .iter()
        .position(|&x| x == c)
        .map(|i| 0x80 + i as u8)
}

fn fix_c1_controls(text: &str) -> String {
    map_chars(text, |c| {
        let u = c as u32;
        if (0x80..=0x9f).contains(&u) {
            let mapped = CP1252_HIGH[(u - 0x80) as usize];
            if mapped != c {
                return Some(Cow::Owned(mapped.to_string()));
            }
        }
        None
    })
}

/// Pairs of characters that UTF-8 shows as when decoded as Windows-1252/Latin-1: a lead byte
/// (`Â`..`ï`) followed by a continuation byte (0x80..0xBF shown through Windows-1252).
pub fn looks_like_mojibake(text: &str) -> bool {
    let mut prev: Option<u8> = None;
    for c in text.chars() {
        let b = single_byte(c);
        if let (Some(lead), Some(cont)) = (prev, b)
            && (0xc2..=0xef).contains(&lead)
            && (0x80..=0xbf).contains(&cont)
        {
            return true;
        }
        // `Â`/`Ã` then a space: a no-break space (0xA0) that was turned into a plain space
        if matches!(prev, Some(0xc2 | 0xc3)) && c == ' ' {
            return true;
        }
        prev = b;
    }
    false
}

/// ftfy's `restore_byte_a0` (two-byte sequences): put back the 0xA0 that became a space. A lone
/// `Ã` before a word is read as `à` and keeps its space (ftfy's `A_GRAVE_WORD_RE`).
fn restore_byte_a0(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 4);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if i + 1 < bytes.len()
            && bytes[i + 1] == b' '
            && matches!(b, 0xc2 | 0xc3 | 0xc5 | 0xce | 0xd0 | 0xd9)
        {
            let rest = &bytes[i + 2..];
            let a_grave_word = b == 0xc3
                && ![&b" "[..], b"quele", b"quela", b"quilo", b"s "]
                    .iter()
                    .any(|p| rest.starts_with(p));
            out.extend_from_slice(&[b, 0xa0]);
            if a_grave_word {
                out.push(b' ');
            }
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// ftfy's `fix_encoding` for the case it is mostly used for: UTF-8 that was decoded as
/// (sloppy) Windows-1252 or Latin-1, possibly more than once.
fn fix_encoding(text: &str) -> String {
    let mut text = text.to_owned();
    loop {
        if text.is_ascii() || !looks_like_mojibake(&text) {
            return text;
        }
        let bytes: Option<Vec<u8>> = text.chars().map(single_byte).collect();
        let Some(mut bytes) = bytes else { return text };
        if std::str::from_utf8(&bytes).is_err() {
            bytes = restore_byte_a0(&bytes);
        }
        match String::from_utf8(bytes) {
            Ok(fixed) if fixed != text => text = fixed,
            _ => return text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mojibake_is_fixed() {
        assert_eq!(fix_text("sÃ³"), "só");
        assert_eq!(fix_text("â€œquotedâ€\u{9d}"), "\"quoted\"");
        assert_eq!(fix_text("cafÃƒÂ©"), "café");
        assert_eq!(fix_text("naïve café"), "naïve café");
    }

    #[test]
    fn small_fixes() {
        assert_eq!(fix_text("ﬁne ＡＢＣ１"), "fine ABC1");
        assert_eq!(fix_text("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(fix_text("a&amp;b"), "a&b");
        assert_eq!(fix_text("<b>a&amp;b"), "<b>a&amp;b");
        assert_eq!(whitespace_clean("  a \t b\u{3000}c\n"), "a b c");
    }
}
