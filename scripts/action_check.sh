#!/usr/bin/env bash
# action.yml, step 2: `gradscope check` with the action's inputs; its exit code is the step's. GitHub annotations
# go to stdout (--github), the Markdown tables to the job summary when the runner provides one.
set -uo pipefail
command=(gradscope check "$TARGET" --github)
[[ -n "${CONFIG:-}" ]] && command+=(--config "$CONFIG")
[[ -n "${BASELINE:-}" ]] && command+=(--baseline "$BASELINE")
[[ -n "${HTML:-}" ]] && command+=(--html "$HTML")
[[ -n "${JUNIT:-}" ]] && command+=(--junit "$JUNIT")
[[ -n "${GITHUB_STEP_SUMMARY:-}" ]] && command+=(--markdown "$GITHUB_STEP_SUMMARY")
if [[ -n "${ARGS:-}" ]]; then
  read -r -a extra <<<"$ARGS"
  command+=("${extra[@]}")
fi
echo "+ ${command[*]}" >&2
"${command[@]}"
