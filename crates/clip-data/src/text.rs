//! Line-oriented text inputs: text files to tokenize or embed, class lists, template lists.
//!
//! One rule for all of them: every line of the file is one item, in order — a blank line is an item
//! too (it tokenizes like `clip.tokenize("")`), so output rows always line up with input lines. A
//! final newline does not start another line; `\r\n` endings and a UTF-8 byte-order mark are
//! accepted (as Python's `utf-8-sig`). Lists of *names* (classes, templates) refuse blank lines
//! instead, naming the line, because a silently skipped name shifts every label after it.

use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot read '{path}': {msg}")]
    Read { path: String, msg: String },
    #[error(
        "'{path}' is not valid UTF-8 text (invalid byte at offset {offset}); convert it to UTF-8 first"
    )]
    NotUtf8 { path: String, offset: usize },
    #[error("the {what} list '{path}' is empty")]
    Empty { what: String, path: String },
    #[error(
        "the {what} list '{path}' has an empty line {line}; remove it (every line is one {what})"
    )]
    BlankName {
        what: String,
        path: String,
        line: usize,
    },
    #[error("{what} name {name:?} appears twice in '{path}' (lines {first} and {second})")]
    Duplicate {
        what: String,
        path: String,
        name: String,
        first: usize,
        second: usize,
    },
}

/// A UTF-8 text file (a leading byte-order mark removed).
pub fn read_text(path: &Path) -> Result<String, TextError> {
    let bytes = std::fs::read(path).map_err(|e| TextError::Read {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    decode_text(bytes, &path.display().to_string())
}

/// UTF-8 bytes as text (a leading byte-order mark removed); `name` is used in the error.
pub fn decode_text(bytes: Vec<u8>, name: &str) -> Result<String, TextError> {
    let text = String::from_utf8(bytes).map_err(|e| TextError::NotUtf8 {
        path: name.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

/// Every line of `text`, blank ones included (`\r\n` or `\n`; a final newline ends the last line).
pub fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// Every line of a UTF-8 file, blank ones included: one item per line.
pub fn read_lines(path: &Path) -> Result<Vec<String>, TextError> {
    Ok(lines(&read_text(path)?))
}

/// A list of names, one per line (trimmed): `what` is "class" or "label". An empty list (no line or
/// only blank ones), a blank line between names or a name given twice is an error naming the line.
pub fn read_names(path: &Path, what: &str) -> Result<Vec<String>, TextError> {
    let origin = path.display().to_string();
    let named: Vec<(usize, String)> = read_lines(path)?
        .into_iter()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_owned()))
        .collect();
    if named.iter().all(|(_, n)| n.is_empty()) {
        return Err(TextError::Empty {
            what: what.into(),
            path: origin,
        });
    }
    if let Some((line, _)) = named.iter().find(|(_, n)| n.is_empty()) {
        return Err(TextError::BlankName {
            what: what.into(),
            path: origin,
            line: *line,
        });
    }
    check_names(&named, what, &origin)?;
    Ok(named.into_iter().map(|(_, n)| n).collect())
}

/// Empty lists and duplicate names are errors; `names` are (line, name).
pub fn check_names(names: &[(usize, String)], what: &str, origin: &str) -> Result<(), TextError> {
    if names.is_empty() {
        return Err(TextError::Empty {
            what: what.into(),
            path: origin.into(),
        });
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (line, n) in names {
        if let Some(first) = seen.insert(n.as_str(), *line) {
            return Err(TextError::Duplicate {
                what: what.into(),
                path: origin.into(),
                name: n.clone(),
                first,
                second: *line,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_an_item() {
        assert_eq!(lines("a\n\n  \nb\n"), ["a", "", "  ", "b"]);
        assert_eq!(lines("a\r\n\r\nb"), ["a", "", "b"]);
        assert_eq!(lines(""), Vec::<String>::new());
        assert_eq!(lines("\n"), [""]);
        let t = decode_text("\u{feff}x\n".as_bytes().to_vec(), "f").unwrap();
        assert_eq!(lines(&t), ["x"]);
    }

    #[test]
    fn names_refuse_blank_lines_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        std::fs::write(&p, "\u{feff}cat\n\ndog\n").unwrap();
        let e = read_names(&p, "class").unwrap_err().to_string();
        assert!(e.contains("has an empty line 2"), "{e}");
        std::fs::write(&p, "cat\ndog\ncat\n").unwrap();
        let e = read_names(&p, "class").unwrap_err().to_string();
        assert!(
            e.contains("class name \"cat\" appears twice") && e.contains("lines 1 and 3"),
            "{e}"
        );
        std::fs::write(&p, "\u{feff}cat\r\n dog \n").unwrap();
        assert_eq!(read_names(&p, "class").unwrap(), ["cat", "dog"]);
    }
}
