//! A small RFC 4180 CSV reader that remembers the line each record starts on, so every error can
//! name it. Quoted fields may hold commas, doubled quotes and line breaks; CRLF and a leading
//! UTF-8 byte-order mark are accepted; blank lines are skipped.

use std::path::Path;

use crate::{DataError, Location};

/// One record and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRecord {
    pub line: usize,
    pub fields: Vec<String>,
}

fn at(path: &Path, line: usize) -> Location {
    Location {
        file: path.into(),
        line: Some(line),
        id: None,
    }
}

/// Splits `text` into records. Errors name the file and line: an unterminated quoted field, a
/// character after a closing quote, or a quote inside an unquoted field.
pub fn parse(text: &str, path: &Path) -> Result<Vec<CsvRecord>, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1usize;
    let mut record_line = 1usize;
    // Whether the current field started with a quote, is inside quotes, or just closed them.
    let mut quoted = false;
    let mut in_quotes = false;
    let mut after_quote = false;
    let mut quote_line = 1usize;
    let mut chars = text.chars().peekable();

    let end_record = |fields: &mut Vec<String>,
                      field: &mut String,
                      records: &mut Vec<CsvRecord>,
                      record_line: usize,
                      quoted: bool| {
        fields.push(std::mem::take(field));
        let blank = !quoted && fields.len() == 1 && fields[0].trim().is_empty();
        let done = std::mem::take(fields);
        if !blank {
            records.push(CsvRecord {
                line: record_line,
                fields: done,
            });
        }
    };

    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    in_quotes = false;
                    after_quote = true;
                }
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
                after_quote = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_record(&mut fields, &mut field, &mut records, record_line, quoted);
                line += 1;
                record_line = line;
                quoted = false;
                after_quote = false;
            }
            '"' if field.trim().is_empty() && !quoted => {
                // Spaces before an opening quote are dropped, as most readers do.
                field.clear();
                quoted = true;
                in_quotes = true;
                quote_line = line;
            }
            '"' => {
                return Err(DataError::invalid(
                    at(path, line),
                    "a `\"` inside an unquoted field; quote the whole field and double inner quotes (\"\")",
                ));
            }
            ' ' | '\t' if after_quote => {}
            _ if after_quote => {
                return Err(DataError::invalid(
                    at(path, line),
                    format!(
                        "unexpected `{c}` after a closing quote; expected `,` or the end of the line"
                    ),
                ));
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(DataError::invalid(
            at(path, quote_line),
            "a quoted field is never closed (missing `\"`)",
        ));
    }
    if !field.is_empty() || !fields.is_empty() || quoted {
        end_record(&mut fields, &mut field, &mut records, record_line, quoted);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<CsvRecord>, DataError> {
        parse(text, Path::new("r.csv"))
    }

    fn rec(line: usize, fields: &[&str]) -> CsvRecord {
        CsvRecord {
            line,
            fields: fields.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn quotes_commas_newlines_crlf_bom() {
        let text = "\u{feff}a,b,c\r\n1,\"x, \"\"y\"\"\",3\r\n\r\n2,\"multi\nline\",\n4, \"q\" ,5";
        assert_eq!(
            p(text).unwrap(),
            vec![
                rec(1, &["a", "b", "c"]),
                rec(2, &["1", "x, \"y\"", "3"]),
                rec(4, &["2", "multi\nline", ""]),
                rec(6, &["4", "q", "5"]),
            ]
        );
        assert_eq!(p("a\n\"\"").unwrap(), vec![rec(1, &["a"]), rec(2, &[""])]);
        assert_eq!(p("").unwrap(), vec![]);
    }

    #[test]
    fn malformed_quotes_name_the_line() {
        let e = p("a,b\n1,\"open\n2,3\n").unwrap_err().to_string();
        assert!(
            e.starts_with("r.csv:2: ") && e.contains("never closed"),
            "{e}"
        );
        let e = p("a,b\n1,\"x\"y\n").unwrap_err().to_string();
        assert!(
            e.starts_with("r.csv:2: ") && e.contains("after a closing quote"),
            "{e}"
        );
        let e = p("a,b\n1,x\"y\n").unwrap_err().to_string();
        assert!(
            e.starts_with("r.csv:2: ") && e.contains("unquoted field"),
            "{e}"
        );
    }
}
