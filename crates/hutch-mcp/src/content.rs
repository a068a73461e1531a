//! What an interpreter execution's frames become in a tool's answer: streams as text, rich
//! results by MIME type (PNG and JPEG as image content, HTML, Markdown, JSON and plain text as
//! text), artifacts such as matplotlib figures as image content, and the outcome.

use hutch_api::interpreter::Frame;
use rmcp::model::ContentBlock;

/// MIME types shown to the model as images.
const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// Text MIME types of a result, most useful first: the first present one is shown.
const TEXT_TYPES: &[&str] = &[
    "text/html",
    "text/markdown",
    "application/json",
    "image/svg+xml",
    "text/latex",
    "text/plain",
];

/// The content blocks of one execution, and whether it failed.
#[derive(Debug, Default)]
pub(crate) struct Execution {
    /// In the order the frames came, with stdout and stderr each gathered in one block.
    pub(crate) content: Vec<ContentBlock>,
    /// An error frame came, or the outcome was not `completed`.
    pub(crate) failed: bool,
}

/// Turns frames into content blocks.
pub(crate) fn execution(frames: impl IntoIterator<Item = Frame>) -> Execution {
    let mut stdout = String::new();
    let mut stderr = String::new();
    let mut rich = Vec::new();
    let mut outcome = None;
    let mut failed = false;
    for frame in frames {
        match frame {
            Frame::Stdout { text, .. } => stdout.push_str(&text),
            Frame::Stderr { text, .. } => stderr.push_str(&text),
            Frame::Result { data, .. } => rich.extend(result_content(&data)),
            Frame::Artifact {
                name,
                mime_type,
                data,
            } => {
                if IMAGE_TYPES.contains(&mime_type.as_str()) {
                    rich.push(ContentBlock::image(data, mime_type));
                } else {
                    rich.push(ContentBlock::text(format!(
                        "artifact {name} ({mime_type}, base64): {data}"
                    )));
                }
            }
            Frame::Error {
                name,
                value,
                traceback,
            } => {
                failed = true;
                rich.push(ContentBlock::text(format!(
                    "error {name}: {value}\n{traceback}"
                )));
            }
            Frame::Control {
                text,
                execution_count,
                exit_code,
                signal,
                duration_ms,
            } => {
                failed |= text != "completed";
                let mut line = format!("[{text} in {duration_ms} ms");
                if let Some(count) = execution_count {
                    line.push_str(&format!(", execution {count}"));
                }
                if let Some(code) = exit_code {
                    line.push_str(&format!(", exit code {code}"));
                }
                if let Some(signal) = signal {
                    line.push_str(&format!(", signal {signal}"));
                }
                line.push(']');
                outcome = Some(line);
            }
        }
    }
    // A stream that ended before its `control` frame broke off.
    failed |= outcome.is_none();
    let mut content = Vec::new();
    if !stdout.is_empty() {
        content.push(ContentBlock::text(stdout));
    }
    if !stderr.is_empty() {
        content.push(ContentBlock::text(format!("stderr:\n{stderr}")));
    }
    content.extend(rich);
    content.push(ContentBlock::text(outcome.unwrap_or_else(|| {
        "[the execution ended without an outcome]".into()
    })));
    Execution { content, failed }
}

/// The blocks of one MIME bundle: every image, and the most useful text form.
fn result_content(data: &serde_json::Map<String, serde_json::Value>) -> Vec<ContentBlock> {
    let mut blocks = Vec::new();
    for mime in IMAGE_TYPES {
        if let Some(serde_json::Value::String(base64)) = data.get(*mime) {
            blocks.push(ContentBlock::image(base64.clone(), *mime));
        }
    }
    if let Some(text) = TEXT_TYPES
        .iter()
        .find_map(|mime| data.get(*mime).map(|value| (mime, value)))
        .map(|(mime, value)| match value {
            serde_json::Value::String(text) if *mime == "text/plain" => text.clone(),
            serde_json::Value::String(text) => format!("{mime}:\n{text}"),
            other => format!("{mime}:\n{other}"),
        })
    {
        blocks.push(ContentBlock::text(text));
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(execution: &Execution) -> Vec<String> {
        execution
            .content
            .iter()
            .filter_map(|block| block.as_text().map(|t| t.text.clone()))
            .collect()
    }

    #[test]
    fn a_figure_becomes_an_image_beside_the_streams_and_the_outcome() {
        let frames = vec![
            Frame::Stdout {
                text: "a".into(),
                seq: 0,
            },
            Frame::Stdout {
                text: "b\n".into(),
                seq: 1,
            },
            Frame::Artifact {
                name: "figure-1.png".into(),
                mime_type: "image/png".into(),
                data: "iVBORw0KGgo=".into(),
            },
            Frame::Control {
                text: "completed".into(),
                execution_count: Some(3),
                exit_code: None,
                signal: None,
                duration_ms: 12,
            },
        ];
        let execution = execution(frames);
        assert!(!execution.failed);
        assert_eq!(
            texts(&execution),
            ["ab\n", "[completed in 12 ms, execution 3]"]
        );
        let image = execution
            .content
            .iter()
            .find_map(|block| block.as_image())
            .expect("an image block");
        assert_eq!(image.mime_type, "image/png");
        assert_eq!(image.data, "iVBORw0KGgo=");
    }

    #[test]
    fn html_is_preferred_to_plain_text_and_errors_fail_the_call() {
        let mut data = serde_json::Map::new();
        data.insert("text/plain".into(), "<DataFrame>".into());
        data.insert("text/html".into(), "<table></table>".into());
        let frames = vec![
            Frame::Result {
                data,
                execution_count: Some(1),
            },
            Frame::Error {
                name: "ZeroDivisionError".into(),
                value: "division by zero".into(),
                traceback: "line 1".into(),
            },
        ];
        let execution = execution(frames);
        assert!(execution.failed);
        assert_eq!(
            texts(&execution),
            [
                "text/html:\n<table></table>",
                "error ZeroDivisionError: division by zero\nline 1",
                "[the execution ended without an outcome]",
            ]
        );
    }
}
