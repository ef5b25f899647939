//! `pg_settings_*`: every numeric and boolean setting, named and scaled exactly as
//! postgres_exporter does (`shared_buffers` in 8kB pages → `pg_settings_shared_buffers_bytes`).

/// The metric name and value for one pg_settings row, or `None` for settings the
/// exporter leaves out (strings, enums, unknown units, unparsable values).
pub fn setting_metric(
    name: &str,
    setting: &str,
    unit: &str,
    vartype: &str,
) -> Option<(String, f64)> {
    let base = format!("pg_settings_{}", name.replace(['.', '-'], "_"));
    match vartype {
        "bool" => return Some((base, if setting == "on" { 1.0 } else { 0.0 })),
        "integer" | "real" => {}
        _ => return None,
    }
    let value: f64 = setting.trim().parse().ok()?;
    if unit.is_empty() {
        return Some((base, value));
    }
    let (suffix, factor) = match unit {
        "ms" => ("_seconds", 1e-3),
        "s" => ("_seconds", 1.0),
        "min" => ("_seconds", 60.0),
        "h" => ("_seconds", 3600.0),
        "d" => ("_seconds", 86_400.0),
        unit => ("_bytes", bytes_per_unit(unit)?),
    };
    // -1 means "disabled" and is kept as is.
    let value = if value == -1.0 { value } else { value * factor };
    Some((format!("{base}{suffix}"), value))
}

/// "8kB" → 8192: memory units are powers of two, optionally with a count in front.
fn bytes_per_unit(unit: &str) -> Option<f64> {
    let digits = unit
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unit.len());
    let (count, unit) = unit.split_at(digits);
    let count: f64 = if count.is_empty() {
        1.0
    } else {
        count.parse().ok()?
    };
    let base = match unit {
        "B" => 1.0,
        "kB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(count * base)
}

#[cfg(test)]
mod tests {
    use super::setting_metric;

    #[test]
    fn names_and_units_follow_postgres_exporter() {
        let m = |n, s, u, t| setting_metric(n, s, u, t);
        assert_eq!(
            m("max_connections", "100", "", "integer"),
            Some(("pg_settings_max_connections".into(), 100.0))
        );
        assert_eq!(
            m("shared_buffers", "16384", "8kB", "integer"),
            Some(("pg_settings_shared_buffers_bytes".into(), 134_217_728.0))
        );
        assert_eq!(
            m("work_mem", "4096", "kB", "integer"),
            Some(("pg_settings_work_mem_bytes".into(), 4_194_304.0))
        );
        assert_eq!(
            m("log_min_duration_statement", "1000", "ms", "integer"),
            Some(("pg_settings_log_min_duration_statement_seconds".into(), 1.0))
        );
        assert_eq!(
            m("log_min_duration_statement", "-1", "ms", "integer"),
            Some((
                "pg_settings_log_min_duration_statement_seconds".into(),
                -1.0
            ))
        );
        assert_eq!(
            m("log_rotation_age", "1440", "min", "integer"),
            Some(("pg_settings_log_rotation_age_seconds".into(), 86_400.0))
        );
        assert_eq!(
            m("fsync", "on", "", "bool"),
            Some(("pg_settings_fsync".into(), 1.0))
        );
        assert_eq!(
            m("pg_stat_statements.track_utility", "off", "", "bool"),
            Some(("pg_settings_pg_stat_statements_track_utility".into(), 0.0))
        );
        assert_eq!(
            m("wal_segment_size", "16777216", "B", "integer"),
            Some(("pg_settings_wal_segment_size_bytes".into(), 16_777_216.0))
        );
        assert_eq!(
            m("checkpoint_completion_target", "0.9", "", "real"),
            Some(("pg_settings_checkpoint_completion_target".into(), 0.9))
        );
        assert_eq!(m("DateStyle", "ISO, MDY", "", "string"), None);
        assert_eq!(m("wal_level", "replica", "", "enum"), None);
        assert_eq!(m("odd", "1", "furlongs", "integer"), None);
    }
}
