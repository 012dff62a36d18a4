// A failed fal node's sentences for its own body (web/result_panel.js). Pure functions, no
// ComfyUI imports, so `node --test web/tests/` checks them.
//
// Two ways a node fails: ComfyUI refuses the prompt before running it (POST /prompt answers
// node_errors; a VALIDATE_INPUTS sentence arrives as "key_name - <sentence>"), or the node
// raises while it runs (the execution_error event's exception_message is the pack's
// sentence as the node raised it).

/** One sentence: spaces folded, a full stop at the end; a capital first letter unless it
 * starts with a name ("fal Sharpen: ..." keeps its lower-case "fal"). */
function sentence(text) {
  let clean = String(text ?? "").replace(/\s+/g, " ").trim();
  if (!clean) return "";
  if (!/^fal\b/.test(clean)) clean = clean[0].toUpperCase() + clean.slice(1);
  return /[.!?…]$/.test(clean) ? clean : `${clean}.`;
}

/** One node's entry of node_errors -> its sentences (one per error). */
export function nodeErrorSentences(nodeError) {
  const errors = Array.isArray(nodeError?.errors) ? nodeError.errors : [];
  return errors.map((error) => {
    const details = String(error?.details ?? "").trim();
    const input = error?.extra_info?.input_name;
    if (error?.type === "custom_validation_failed") {
      // "key_name - this workflow uses a fal key named 'x', ...": the node's own sentence.
      const own = input && details.startsWith(`${input} - `) ? details.slice(input.length + 3) : details;
      return sentence(own || error?.message);
    }
    return sentence([error?.message, details].filter(Boolean).join(": "));
  }).filter(Boolean);
}

/** What the panel shows: the sentences, trimmed, without repeats. */
export function failureLines(sentences) {
  const list = Array.isArray(sentences) ? sentences : [sentences];
  return [...new Set(list.map(sentence).filter(Boolean))];
}
