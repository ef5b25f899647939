//! The Prometheus text exposition format (version 0.0.4), written by hand: the metric
//! names are a contract with postgres_exporter's and the pgbouncer exporter's users, and
//! metrics crates rename things (prometheus-client appends `_total` to every counter).

use std::collections::HashMap;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// Metric families in the order they were first added, each with its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<(String, f64)>,
}

impl Exposition {
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.add(name, help, Kind::Gauge, labels, value);
    }

    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.add(name, help, Kind::Counter, labels, value);
    }

    /// Adds one sample; the first call for a name fixes its help and kind. A repeated
    /// label set replaces the earlier value, so the output never has duplicates.
    pub fn add(&mut self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)], value: f64) {
        self.add_rendered(name, help, kind, render_labels(labels), value);
    }

    fn add_rendered(&mut self, name: &str, help: &str, kind: Kind, rendered: String, value: f64) {
        let name = sanitize_name(name);
        let i = match self.index.get(&name) {
            Some(&i) => i,
            None => {
                self.families.push(Family {
                    name: name.clone(),
                    help: help.to_owned(),
                    kind,
                    samples: Vec::new(),
                });
                self.index.insert(name, self.families.len() - 1);
                self.families.len() - 1
            }
        };
        let samples = &mut self.families[i].samples;
        match samples.iter_mut().find(|(l, _)| *l == rendered) {
            Some(sample) => sample.1 = value,
            None => samples.push((rendered, value)),
        }
    }

    /// Moves `other`'s samples in, as if they had been added here.
    pub fn append(&mut self, other: Exposition) {
        for family in other.families {
            for (labels, value) in family.samples {
                self.add_rendered(&family.name, &family.help, family.kind, labels, value);
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for family in self.families.iter().filter(|f| !f.samples.is_empty()) {
            let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {} {}", family.name, type_name(family));
            for (labels, value) in &family.samples {
                let _ = writeln!(out, "{}{} {}", family.name, labels, format_value(*value));
            }
        }
        out
    }
}

/// The exporters' names predate the lint rules `promtool check metrics` applies: their
/// counters lack `_total` (pg_stat_database_xact_commit) and some gauges end in `_count`
/// (pg_locks_count). Those families are declared `untyped`, which the rules exempt and
/// PromQL treats the same, so the names stay exactly what dashboards query.
fn type_name(family: &Family) -> &'static str {
    let reserved = ["_count", "_sum", "_bucket"]
        .iter()
        .any(|s| family.name.ends_with(s));
    match family.kind {
        Kind::Counter if family.name.ends_with("_total") && !reserved => "counter",
        Kind::Gauge if !reserved => "gauge",
        _ => "untyped",
    }
}

/// Metric names allow `[a-zA-Z_:][a-zA-Z0-9_:]*`; anything else (a setting's `.`)
/// becomes `_`.
pub fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_once_with_help_type_and_escaped_labels() {
        let mut e = Exposition::default();
        e.gauge("pg_up", "Whether PostgreSQL answered.", &[], 1.0);
        e.counter("x_total", "X.", &[("db", "a\"b\\c\nd")], 2.5);
        e.counter("x_total", "X.", &[("db", "e")], 3.0);
        e.counter("x_total", "X.", &[("db", "e")], 4.0);
        assert_eq!(
            e.render(),
            "# HELP pg_up Whether PostgreSQL answered.\n# TYPE pg_up gauge\npg_up 1\n\
             # HELP x_total X.\n# TYPE x_total counter\n\
             x_total{db=\"a\\\"b\\\\c\\nd\"} 2.5\nx_total{db=\"e\"} 4\n"
        );
    }

    #[test]
    fn exporter_names_that_break_lint_rules_are_untyped() {
        let mut e = Exposition::default();
        e.counter("pg_stat_database_xact_commit", "h", &[], 1.0);
        e.gauge("pg_locks_count", "h", &[], 1.0);
        let text = e.render();
        assert!(text.contains("# TYPE pg_stat_database_xact_commit untyped\n"));
        assert!(text.contains("# TYPE pg_locks_count untyped\n"));
    }

    #[test]
    fn odd_names_and_values_are_made_valid() {
        assert_eq!(
            sanitize_name("pg_settings_auto_explain.log"),
            "pg_settings_auto_explain_log"
        );
        assert_eq!(sanitize_name("9x"), "_9x");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(1e21), "1000000000000000000000");
    }

    #[test]
    fn empty_families_are_left_out() {
        let e = Exposition::default();
        assert_eq!(e.render(), "");
    }
}
