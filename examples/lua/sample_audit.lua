-- sample_audit.lua: every message goes to the queue "events", and 1% of them also to
-- "audit". The sample is deterministic, not random: a counter picks the 100th, 200th, 300th
-- ... message, so a test (or an auditor) knows exactly which ones to expect. A hash of the
-- message id would pick the same messages on every replay instead; a counter is simpler.
--
-- The counter lives in the script's state, which persists from one call to the next; a
-- reload (SIGHUP after the file changed) starts a new state, and the count starts again.

local seen = 0

function route(msg)
  seen = seen + 1
  if seen % 100 == 0 then
    return { "events", "audit" }
  end
  return "events"
end
