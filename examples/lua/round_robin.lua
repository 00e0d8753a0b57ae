-- round_robin.lua: spreads messages over three worker queues in turn, one message each:
-- work-1, work-2, work-3, work-1, ... Unlike competing consumers on one queue, each worker
-- keeps its own backlog (and its own storage, limits and dead-lettering).
--
-- Which worker is next is remembered between calls: the script's state persists until the
-- exchange is deleted or the script is reloaded.

local workers = { "work-1", "work-2", "work-3" }
local last = 0

function route(msg)
  last = last % #workers + 1
  return workers[last]
end
