//! Rows of named values (`kvbench plan` and `kvbench models`) in every format: the same
//! serializers as a run's, over a list of `(column, value)` rows.

use super::{markdown, table, Format};
use kvbench_planner::columns::cell_text;
use serde_json::Value;

/// One row: column names with their values, in column order.
pub type Row = Vec<(String, Value)>;

/// Rows as text in `format` (a table draws the same columns as the CSV).
pub fn render(rows: &[Row], format: Format) -> String {
    let header: Vec<String> = rows
        .first()
        .map(|r| r.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let cells = || -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|(_, v)| cell_text(v)).collect())
            .collect()
    };
    let object = |r: &Row| -> serde_json::Map<String, Value> { r.iter().cloned().collect() };
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(&header).expect("writing to memory");
            for row in cells() {
                w.write_record(&row).expect("writing to memory");
            }
            String::from_utf8(w.into_inner().expect("writing to memory")).expect("UTF-8")
        }
        Format::Json => {
            let array: Vec<_> = rows.iter().map(object).collect();
            serde_json::to_string_pretty(&array).expect("values serialize") + "\n"
        }
        Format::Jsonl => rows
            .iter()
            .map(|r| serde_json::to_string(&object(r)).expect("values serialize") + "\n")
            .collect(),
        Format::Markdown => markdown::table(&header, &cells()),
        Format::Table => table::terminal(&header, &cells()) + "\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows() -> Vec<Row> {
        vec![
            vec![("model".into(), json!("a, b")), ("n".into(), json!(2))],
            vec![("model".into(), json!("c")), ("n".into(), Value::Null)],
        ]
    }

    #[test]
    fn every_format_holds_every_row() {
        assert_eq!(render(&rows(), Format::Csv), "model,n\n\"a, b\",2\nc,\n");
        let json: Vec<Value> = serde_json::from_str(&render(&rows(), Format::Json)).unwrap();
        assert_eq!(json[0]["n"], 2);
        assert_eq!(render(&rows(), Format::Jsonl).lines().count(), 2);
        assert_eq!(
            render(&rows(), Format::Markdown),
            "| model | n |\n| --- | --- |\n| a, b | 2 |\n| c |  |\n"
        );
    }
}
