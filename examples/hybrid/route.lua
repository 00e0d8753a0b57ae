-- route.lua: the Lua exchange in the middle of examples/hybrid.yaml. Kafka records produced
-- to the topic `orders` arrive here through forward_to, as messages whose headers are the
-- record's headers and whose body is the record's value. An order goes to the AMQP queue of
-- its region: the `region` header if the producer set one, else the "region" field of a JSON
-- value.
--
--   region europe   ->  queue orders-europe
--   region america  ->  queue orders-america
--   anything else   ->  queue orders-unrouted (a person looks at it; nothing is dropped)

local queue_for_region = { europe = "orders-europe", america = "orders-america" }

function route(msg)
  local region = msg.headers.region
  if region == nil then
    local ok, doc = pcall(json.decode, msg.body)
    if ok and type(doc) == "table" then
      region = doc.region
    end
  end
  return queue_for_region[region] or "orders-unrouted"
end
