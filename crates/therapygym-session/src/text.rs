//! Cleaning model output into one speaker's turn. Small models often prefix their own role or
//! keep writing the other side's lines; both would corrupt the transcript the judge reads.

fn strip_prefix_ci<'a>(s: &'a str, prefixes: &[&str]) -> &'a str {
    let t = s.trim_start();
    for p in prefixes {
        if t.len() >= p.len() && t.is_char_boundary(p.len()) && t[..p.len()].eq_ignore_ascii_case(p)
        {
            return t[p.len()..].trim_start();
        }
    }
    t
}

fn cut_at_any(s: &str, markers: &[&str]) -> String {
    let lower = s.to_lowercase();
    let cut = markers
        .iter()
        .filter_map(|m| lower.find(&m.to_lowercase()))
        .filter(|i| *i > 0)
        .min();
    match cut {
        Some(i) if s.is_char_boundary(i) => s[..i].to_string(),
        _ => s.to_string(),
    }
}

/// Returns the therapist's turn with role labels removed and any invented patient lines cut.
pub fn clean_therapist_reply(raw: &str) -> String {
    let s = strip_prefix_ci(raw, &["therapist:", "assistant:", "counselor:"]);
    let s = cut_at_any(s, &["\npatient:", "\nclient:", "\nuser:", "<|im_start|>"]);
    let s = s.trim().to_string();
    if s.is_empty() { "...".to_string() } else { s }
}

/// Returns the patient's turn (role labels and invented therapist lines removed) and whether the
/// patient ended the session with `end_marker`.
pub fn clean_patient_reply(raw: &str, name: &str, end_marker: &str) -> (String, bool) {
    let ended = !end_marker.is_empty() && raw.contains(end_marker);
    let without = raw.replace(end_marker, " ");
    let name_prefix = format!("{name}:");
    let s = strip_prefix_ci(
        &without,
        &["patient:", "client:", "user:", name_prefix.as_str()],
    );
    let s = cut_at_any(
        s,
        &[
            "\ntherapist:",
            "\nassistant:",
            "\ncounselor:",
            "<|im_start|>",
        ],
    );
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = if s.is_empty() { "...".to_string() } else { s };
    (s, ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn therapist_cleanup() {
        assert_eq!(
            clean_therapist_reply("Therapist: How was your week?\nPatient: Bad."),
            "How was your week?"
        );
        assert_eq!(clean_therapist_reply("   "), "...");
        assert_eq!(
            clean_therapist_reply("Patients often feel this."),
            "Patients often feel this."
        );
    }

    #[test]
    fn patient_cleanup_and_end_marker() {
        let (t, ended) = clean_patient_reply(
            "Abe: I guess it was okay.\nTherapist: Good.",
            "Abe",
            "[END_SESSION]",
        );
        assert_eq!((t.as_str(), ended), ("I guess it was okay.", false));
        let (t, ended) = clean_patient_reply("Thanks, bye. [END_SESSION]", "Abe", "[END_SESSION]");
        assert_eq!((t.as_str(), ended), ("Thanks, bye.", true));
    }
}
