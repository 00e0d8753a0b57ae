-- by_region.lua: routes an order by its `region` header. The exchange runs with
-- `match: topic`, so the string returned is a routing key matched against the exchange's own
-- bindings as topic patterns: queues subscribe to "orders.europe.*" (every European order) or
-- "orders.*.refund" (refunds from every region) without the publisher knowing about them.
--
--   headers {region = "europe"}, routing key "new"  ->  "orders.europe.new"
--
-- An order without a region is dropped rather than guessed at: it is unroutable, so a
-- publisher that set the mandatory flag gets it back (basic.return).

function route(msg)
  local region = msg.headers.region
  if type(region) ~= "string" or region == "" then
    return nil
  end
  return "orders." .. region .. "." .. msg.routing_key
end
