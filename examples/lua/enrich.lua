-- enrich.lua: routes by the routing key as a direct exchange would (the exchange runs with
-- `match: direct`: the string returned must equal a binding key), and stamps the message
-- with where and when it was routed, for the consumer to see:
--
--   x-routed-by  "warren-lua/" .. the exchange's name
--   x-routed-at  seconds since the epoch (an integer: os.time())
--
-- Only the copy this exchange routes carries the headers; the message as published is left
-- alone.

function route(msg)
  msg:set_header("x-routed-by", "warren-lua/" .. msg.exchange)
  msg:set_header("x-routed-at", os.time())
  return msg.routing_key
end
