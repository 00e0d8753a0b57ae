-- by_json_field.lua: content-based routing on a field of a JSON body. The exchange runs with
-- the default `match: queues`, so the string returned names a queue.
--
--   {"kind": "invoice", ...}  ->  queue "invoices"
--   {"kind": "refund", ...}   ->  queue "refunds"
--   anything else             ->  queue "unsorted"
--
-- A body that is not JSON, or has no known kind, goes to "unsorted" for a person to look at
-- instead of failing the route: json.decode raises on bad input, and pcall turns that into a
-- value here, so the publish still lands somewhere.

local queue_for_kind = { invoice = "invoices", refund = "refunds" }

function route(msg)
  local ok, doc = pcall(json.decode, msg.body)
  if ok and type(doc) == "table" then
    local queue = queue_for_kind[doc.kind]
    if queue then
      return queue
    end
  end
  return "unsorted"
end
