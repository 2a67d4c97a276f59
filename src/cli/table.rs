//! Readable output: fixed-width tables with a header row, times in UTC, and
//! the helpers that turn the API's JSON values into cells.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// What an empty or unknown cell shows.
pub const NONE: &str = "-";

/// Columns padded to their widest cell, two spaces apart; the last column
/// is not padded, so no line ends in spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                let cell = one_line(cell);
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(&cell);
                if i + 1 < columns {
                    line.push_str(&" ".repeat(width - self::width(&cell)));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Characters, not bytes: good enough for aliases and notes.
fn width(text: &str) -> usize {
    one_line(text).chars().count()
}

/// A cell never breaks the row: line breaks and tabs become spaces.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Key/value lines (`alarms get`, `probes get`): keys padded to the widest.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let line = format!("{:<width$}  {}", format!("{key}:"), one_line(value), width = width + 1);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Epoch milliseconds as `2024-05-01 12:34:56` (UTC).
pub fn utc_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A time the API sent: epoch ms (number), an ISO 8601 string, or null.
pub fn time(value: Option<&Value>) -> String {
    match value {
        Some(Value::Number(n)) => n.as_i64().map(utc_ms).unwrap_or_else(|| n.to_string()),
        Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
            .map(|t| utc_ms(t.timestamp_millis()))
            .unwrap_or_else(|_| text.clone()),
        None | Some(Value::Null) => NONE.to_string(),
        Some(other) => other.to_string(),
    }
}

/// A string, number or bool field as text; `-` when absent or null.
pub fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => NONE.to_string(),
        Some(Value::String(s)) if s.is_empty() => NONE.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => NONE.to_string(),
        Some(Value::Array(items)) => items.iter().map(|v| text(Some(v))).collect::<Vec<_>>().join(","),
        Some(other) => other.to_string(),
    }
}

/// `yes`/`no` for a boolean field (absent is `no`).
pub fn yes_no(value: Option<&Value>) -> String {
    if value.and_then(Value::as_bool).unwrap_or(false) {
        "yes".into()
    } else {
        "no".into()
    }
}

/// The items of an array answer (anything else: none).
pub fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The API's JSON, pretty, with a final newline.
pub fn pretty(value: &Value) -> String {
    let mut out = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up_and_lines_do_not_end_in_spaces() {
        let mut table = Table::new(&["ID", "NAME", "NOTES"]);
        table.row(vec!["1".into(), "web0".into(), "".into()]);
        table.row(vec!["12".into(), "a much longer name".into(), "two\nlines".into()]);
        insta::assert_snapshot!(table.render(), @r"
        ID  NAME                NOTES
        1   web0
        12  a much longer name  two lines
        ");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(Table::new(&["ID", "STATE"]).render(), "ID  STATE\n");
    }

    #[test]
    fn fields_pad_their_keys() {
        let out = fields(&[("id", "3".into()), ("last event", "-".into())]);
        assert_eq!(out, "id:          3\nlast event:  -\n");
    }

    #[test]
    fn times_are_utc_whatever_the_api_sent() {
        assert_eq!(utc_ms(1_714_566_896_000), "2024-05-01 12:34:56");
        assert_eq!(time(Some(&json!(1_714_566_896_000_i64))), "2024-05-01 12:34:56");
        assert_eq!(time(Some(&json!("2024-05-01T14:34:56+02:00"))), "2024-05-01 12:34:56");
        assert_eq!(time(Some(&json!(null))), "-");
        assert_eq!(time(None), "-");
        assert_eq!(time(Some(&json!("whenever"))), "whenever");
    }

    #[test]
    fn cells_from_values() {
        assert_eq!(text(Some(&json!(["email", "pager"]))), "email,pager");
        assert_eq!(text(Some(&json!([]))), "-");
        assert_eq!(text(Some(&json!(""))), "-");
        assert_eq!(text(Some(&json!(3))), "3");
        assert_eq!(yes_no(Some(&json!(true))), "yes");
        assert_eq!(yes_no(None), "no");
    }
}
