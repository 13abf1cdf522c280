//! OpenRLHF's remote reward protocol (`docs/serve.md`, "OpenRLHF"): `query` is chat-template text
//! (prompt + response, decoded with special tokens), parsed back into turns; the structure
//! (profile, seed) comes from `labels`, a JSON string per sample.

use serde_json::Value;
use therapygym_core::profile::valid_id;
use therapygym_core::{Speaker, Transcript, Turn};

use crate::config::ChatFormat;

/// Special tokens that may trail a decoded response (EOS, padding).
const TRAILERS: [&str; 6] = [
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "</s>",
    "<pad>",
];

/// Parses a decoded chat into a transcript (system turns dropped; `assistant` = therapist,
/// `user` = patient). The last turn may lack its end marker (a response cut at max tokens).
pub fn parse_query(query: &str, format: ChatFormat) -> Result<Transcript, String> {
    let (start, header_end, end) = match format {
        ChatFormat::Chatml => ("<|im_start|>", "\n", "<|im_end|>"),
        ChatFormat::Llama3 => ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    };
    if !query.contains(start) {
        return Err(format!(
            "`query` holds no `{start}` marker; is the chat format `{}` right (`--chat-format`)?",
            match format {
                ChatFormat::Chatml => "chatml",
                ChatFormat::Llama3 => "llama3",
            }
        ));
    }
    let mut turns = Vec::new();
    let segments: Vec<&str> = query.split(start).skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        let Some((role, rest)) = seg.split_once(header_end) else {
            if i == last && seg.trim().is_empty() {
                continue;
            }
            return Err(format!("segment {} has no role header", i + 1));
        };
        let role = role.trim();
        let mut content = match rest.find(end) {
            Some(k) => &rest[..k],
            None => rest,
        };
        loop {
            let t = content.trim_end();
            match TRAILERS.iter().find(|m| t.ends_with(*m)) {
                Some(m) => content = &t[..t.len() - m.len()],
                None => break,
            }
        }
        let content = content.trim();
        if role == "system" {
            continue;
        }
        let speaker = match role {
            "assistant" => Speaker::Therapist,
            "user" => Speaker::Patient,
            other => {
                return Err(format!(
                    "role `{other}` in segment {}: only system, user (patient) and assistant (therapist) are allowed",
                    i + 1
                ));
            }
        };
        if content.is_empty() && i == last {
            // A trailing generation prompt (`<|im_start|>assistant\n` with nothing after it).
            continue;
        }
        turns.push(Turn::new(speaker, content));
    }
    if !turns.iter().any(|t| t.speaker == Speaker::Therapist) {
        return Err(
            "`query` holds no assistant (therapist) turn: there is nothing to judge".into(),
        );
    }
    Ok(Transcript { turns })
}

/// `{"profile_id": "p-0107", "seed": 1234}` as a JSON string (or an object).
pub fn parse_label(label: &Value) -> Result<(String, u64), String> {
    let obj = match label {
        Value::String(s) => serde_json::from_str::<Value>(s).map_err(|e| {
            format!("the label is not a JSON string with profile_id and seed ({e})")
        })?,
        Value::Object(_) => label.clone(),
        Value::Null => return Err("the label is missing".into()),
        _ => return Err(
            "the label must be a JSON string such as {\"profile_id\": \"p-0107\", \"seed\": 1234}"
                .into(),
        ),
    };
    let profile_id = obj
        .get("profile_id")
        .and_then(Value::as_str)
        .ok_or("the label has no string `profile_id`")?;
    if !valid_id(profile_id) {
        return Err(format!(
            "profile_id `{profile_id}` is not a valid id (at most 128 characters from A-Z a-z 0-9 . _ : -)"
        ));
    }
    let seed = match obj.get("seed") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or("the label has no non-negative integer `seed`")?;
    Ok((profile_id.to_string(), seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chatml_round_trip_with_trailers_and_a_cut_response() {
        let q = "<|im_start|>system\nYou are a therapist.<|im_end|>\n<|im_start|>user\nI can't sleep.<|im_end|>\n<|im_start|>assistant\nWhat keeps you up?<|im_end|>\n<|im_start|>user\nExams.<|im_end|>\n<|im_start|>assistant\nTell me more.<|im_end|><|endoftext|>";
        let t = parse_query(q, ChatFormat::Chatml).unwrap();
        assert_eq!(
            t.canonical(),
            "Patient: I can't sleep.\nTherapist: What keeps you up?\nPatient: Exams.\nTherapist: Tell me more."
        );
        let cut = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHow are";
        assert_eq!(
            parse_query(cut, ChatFormat::Chatml).unwrap().turns[1].text,
            "How are"
        );
        assert!(parse_query("no markers", ChatFormat::Chatml).is_err());
        assert!(
            parse_query(
                "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
                ChatFormat::Chatml
            )
            .is_err(),
            "nothing to judge"
        );
        assert!(parse_query("<|im_start|>tool\nx<|im_end|>", ChatFormat::Chatml).is_err());
    }

    #[test]
    fn llama3() {
        let q = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|>";
        let t = parse_query(q, ChatFormat::Llama3).unwrap();
        assert_eq!(t.canonical(), "Patient: Hello\nTherapist: Hi there.");
    }

    #[test]
    fn labels() {
        assert_eq!(
            parse_label(&json!("{\"profile_id\":\"p-0107\",\"seed\":1234}")).unwrap(),
            ("p-0107".to_string(), 1234)
        );
        assert_eq!(
            parse_label(&json!({"profile_id": "a", "seed": "7"})).unwrap(),
            ("a".to_string(), 7)
        );
        for bad in [
            json!("nope"),
            json!("{\"seed\":1}"),
            json!("{\"profile_id\":\"a b\",\"seed\":1}"),
            json!("{\"profile_id\":\"a\",\"seed\":-1}"),
            json!(3),
            Value::Null,
        ] {
            assert!(parse_label(&bad).is_err(), "{bad}");
        }
    }
}
