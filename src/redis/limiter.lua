-- shmlimit's six algorithms (src/algorithms/buckets.cpp, windows.cpp, gcra.hpp) as one Redis
-- script, called with EVALSHA. Every decision is the same five values the
-- local segment computes from the same (state, now, cost, params).
--
-- Numbers. Redis Lua numbers are doubles: integers are exact below 2^53.
--   * Time comes from Redis TIME in microseconds since the Unix epoch
--     (below 2^53 until the year 2255).
--   * Each bucket keeps its own time origin `o` (us since the Unix epoch,
--     a multiple of the policy's alignment: 1 us for GCRA and the leaky
--     bucket, 1 ms for the quiet period, lcm(period, 1 us) for the window
--     algorithms, so windows are aligned to the Unix epoch on every key)
--     and its state in integer ns relative to it.
--   * The client refuses policies whose spans (B*T, a window, the time to
--     refill a token bucket, ...) exceed 2^50 ns (13 days), so a state is at
--     most now + 2^50. When now passes 2^51 ns after the origin, the origin
--     moves forward by a multiple of the alignment (rebase); a state read
--     2^52 ns or more after its origin is full (its spans ended) and starts
--     afresh. Every value stays below 2^53.
--   * Products that could pass 2^53 (the sliding window's prev * (W - e))
--     go through muldiv, exact floor(a * b / c) by doubling.
--
-- Call: KEYS = one Redis key per bucket. ARGV[1] = op ("acquire", "many", "peek",
-- "refund", "lease"), ARGV[2] = now in us (honoured only by the test build
-- of this script, TEST_CLOCK; ignored otherwise), ARGV[3] = need (lease
-- only: the least grant worth having), then per key 7 values: algorithm,
-- count, period_ns, burst, emission_ns, align_us, cost (for the sliding
-- log, align_us carries its LogWait: 0 exact, 1 DRF).
--   acquire: every bucket decides; when several keys are given, all are
--            charged if all admit and none otherwise (no write on a denial,
--            as Limiter::acquire_many). One key: as Limiter::acquire. A key
--            given k times is one bucket charged k times: its k-th mention
--            is decided for the costs of its first k mentions together.
--   many:    as acquire of several keys, even of one: the keys of one
--            call of a request of several limits spread over several
--            calls (no write on a denial; a refused quiet period is
--            neither blocked nor restarted).
--   peek:    decides without storing.
--   refund:  gives `cost` back to every bucket, never beyond its capacity
--            (a key given k times: its k costs, one after the other).
--   lease:   one key; grants min(cost, remaining) units if at least `need`
--            fit, else decides `need` as acquire does.
--   take, renew, release: a concurrency lease (algorithm 7) on one key;
--            ARGV[3] is the lease's token and period_ns its TTL
--            ("Concurrency leases" below).
-- Reply: per key allowed, limit, remaining, retry_after_ns (-1: never),
-- reset_after_ns, reason (shmlimit::Reason), granted.
-- Storage: a hash {o = origin us, a, b, c = state fields}; PEXPIRE set to
-- the moment the bucket is full again (rounded up to 1 ms), DEL when full.
-- The sliding log (algorithm 8) is a sorted set instead: one member per
-- admission, scored by its time in us since the Unix epoch (exact below
-- 2^53), named "<time>:<n>" (n counts the admissions of that same us).

local TEST_CLOCK = false

local NEVER = -1
local R_OK, R_TOO_HIGH, R_CORRUPT = 0, 4, 7
local MS = 1000000
local REBASE_AT = 2251799813685248 -- 2^51 ns
local STALE_AT = 4503599627370496 -- 2^52 ns
local KEEP = 1125899906842624 -- 2^50 ns: the longest span of a valid policy

-- floor(a / b) for integers 0 <= a < 2^53, 1 <= b < 2^53, exactly: the
-- double quotient may round up to the next integer; one step corrects it.
local function idiv(a, b)
  local q = math.floor(a / b)
  local r = a - q * b
  while r < 0 do q = q - 1; r = r + b end
  while r >= b do q = q + 1; r = r - b end
  return q, r
end

-- floor(a * b / c) and the remainder, exactly, for integers a, b < 2^53,
-- 1 <= c < 2^52, when the quotient is below 2^53.
local function muldiv(a, b, c)
  local ab = a * b
  if ab < 9007199254740992 then return idiv(ab, c) end -- exact product
  local qb, rb = idiv(b, c)
  -- a * b / c = a * qb + a * rb / c; the second by doubling over a's bits.
  local bits, x = {}, a
  while x > 0 do
    local h = idiv(x, 2)
    bits[#bits + 1] = x - 2 * h
    x = h
  end
  local q, r = 0, 0
  for i = #bits, 1, -1 do
    q, r = 2 * q, 2 * r
    if r >= c then q = q + 1; r = r - c end
    if bits[i] == 1 then
      r = r + rb
      if r >= c then q = q + 1; r = r - c end
    end
  end
  return a * qb + q, r
end

local function num(x)
  return string.format('%.0f', x)
end

local function ceil_div(a, b)
  local q, r = idiv(a, b)
  if r ~= 0 then q = q + 1 end
  return q
end

local function dec(allowed, limit, remaining, retry, reset, reason)
  return {allowed and 1 or 0, limit, remaining, retry, reset, reason or R_OK}
end

-- An algorithm: at(p, s, now) normalises the stored state s = {a, b, c};
-- decide(p, s, now, cost) -> decision, store, new state;
-- refund(p, s, now, cost) -> new state, changed.

-- GCRA: a = TAT. The leaky bucket (a = empty_at) decides identically
-- (src/algorithms/buckets.cpp: "This is GCRA with empty_at = TAT").
local gcra = {}
function gcra.decide(p, s, now, cost)
  local T, B = p.emission, p.burst
  local tau = B * T
  local base = math.max(s[1], now)
  local debt = base - now
  local function rem(d)
    if d >= tau then return 0 end
    return (idiv(tau - d, T))
  end
  if cost > B then return dec(false, B, rem(debt), NEVER, debt, R_TOO_HIGH), false, s end
  local new_tat = base + cost * T
  local nd = new_tat - now
  if nd <= tau then return dec(true, B, rem(nd), 0, nd), cost > 0, {new_tat, 0, 0} end
  return dec(false, B, rem(debt), nd - tau, debt), false, s
end
function gcra.refund(p, s, now, cost)
  local tat = s[1]
  local nxt = tat
  if tat > now then
    local debt = tat - now
    if cost >= ceil_div(debt, p.emission) then nxt = now else nxt = tat - cost * p.emission end
  end
  return {nxt, 0, 0}, nxt ~= tat
end
function gcra.shift(s, S) return {math.max(s[1] - S, 0), 0, 0} end

-- The refund of a state {index, n, 0} whose n counts what is taken (the
-- token bucket's missing tokens, the fixed window's used): n less cost, not
-- below 0, at the index at(p, s, now) gives.
local function counter_refund(at)
  return function(p, s, now, cost)
    local idx, n = at(p, s, now)
    local before = n
    n = n > cost and n - cost or 0
    return {idx, n, 0}, n ~= before
  end
end

-- Token bucket, discrete refill: a = refill index, b = missing tokens.
local tb = {}
function tb.at(p, s, now)
  local cur = idiv(now, p.period)
  local idx, miss = s[1], s[2]
  if miss == 0 or cur > idx then
    if miss ~= 0 then
      local d = cur - idx
      if d >= miss or p.count >= miss or d * p.count >= miss then miss = 0 else miss = miss - d * p.count end
    end
    idx = cur
  end
  return idx, miss
end
local function tb_wait(p, idx, need, now)
  if need == 0 then return 0 end
  return (idx + ceil_div(need, p.count)) * p.period - now
end
local function tb_report(p, idx, miss, now, allowed, retry)
  local tokens = p.burst > miss and p.burst - miss or 0
  return dec(allowed, p.burst, tokens, retry, tb_wait(p, idx, miss, now))
end
function tb.decide(p, s, now, cost)
  local idx, miss = tb.at(p, s, now)
  if cost > p.burst then
    local tokens = p.burst > miss and p.burst - miss or 0
    return dec(false, p.burst, tokens, NEVER, tb_wait(p, idx, miss, now), R_TOO_HIGH), false, s
  end
  local after = miss + cost
  if after > p.burst then
    return tb_report(p, idx, miss, now, false, tb_wait(p, idx, after - p.burst, now)), false, s
  end
  return tb_report(p, idx, after, now, true, 0), cost > 0, {idx, after, 0}
end
tb.refund = counter_refund(tb.at)

-- Fixed window: a = window index, b = used in it.
local fw = {}
function fw.at(p, s, now)
  local cur = idiv(now, p.period)
  if s[2] == 0 or cur > s[1] then return cur, 0 end
  return s[1], s[2]
end
local function fw_report(p, idx, used, now, allowed, retry)
  local reset = used > 0 and (idx + 1) * p.period - now or 0
  return dec(allowed, p.count, p.count > used and p.count - used or 0, retry, reset)
end
function fw.decide(p, s, now, cost)
  local idx, used = fw.at(p, s, now)
  if cost > p.count then
    local d = fw_report(p, idx, used, now, false, NEVER)
    d[6] = R_TOO_HIGH
    return d, false, s
  end
  if used + cost > p.count then
    return fw_report(p, idx, used, now, false, (idx + 1) * p.period - now), false, s
  end
  return fw_report(p, idx, used + cost, now, true, 0), cost > 0, {idx, used + cost, 0}
end
fw.refund = counter_refund(fw.at)

-- Sliding window counter: a = window index k, b = prev, c = cur.
local sw = {}
function sw.at(p, s, now)
  local W = p.period
  local k = idiv(now, W)
  local v = {index = k, e = now - k * W, prev = s[2], cur = s[3]}
  if v.prev == 0 and v.cur == 0 then return v end
  local stored = s[1]
  if stored == k then return v end
  if stored > k then -- an older reading: the state at the start of its own window
    v.index = stored
    v.e = 0
    return v
  end
  if stored == k - 1 then
    v.prev, v.cur = v.cur, 0
    return v
  end
  v.prev, v.cur = 0, 0
  return v
end
local function sw_until(p, v, windows, e, now) return (v.index + windows) * p.period + e - now end
local function sw_remaining(p, v)
  -- floor((count*W - prev*(W - e)) / W) - cur = count - prev + floor(prev*e/W) - cur
  local f = muldiv(v.prev, v.e, p.period)
  local whole = p.count - v.prev + f
  if whole <= v.cur then return 0 end
  return whole - v.cur
end
local function sw_reset(p, v, now)
  if v.cur > 0 then return sw_until(p, v, 2, 0, now) end
  if v.prev > 0 then return sw_until(p, v, 1, 0, now) end
  return 0
end
local function sw_fits(p, v, cost)
  -- prev*(W - e) + (cur + cost)*W <= count*W
  if v.cur + cost > p.count then return false end
  local c = p.count - v.cur - cost
  local q, r = muldiv(v.prev, p.period - v.e, p.period)
  return q < c or (q == c and r == 0)
end
local function sw_fit(slack_units, W, by)
  -- min(floor(slack_units * W / by), W); 0 when by == 0
  if by == 0 then return 0 end
  if slack_units >= by then return W end
  return (muldiv(slack_units, W, by))
end
local function sw_retry(p, v, cost, now)
  local W = p.period
  if v.cur + cost <= p.count then
    return sw_until(p, v, 0, W - sw_fit(p.count - v.cur - cost, W, v.prev), now)
  end
  return sw_until(p, v, 1, W - sw_fit(p.count - cost, W, v.cur), now)
end
function sw.decide(p, s, now, cost)
  local v = sw.at(p, s, now)
  if cost > p.count then
    return dec(false, p.count, sw_remaining(p, v), NEVER, sw_reset(p, v, now), R_TOO_HIGH), false, s
  end
  if not sw_fits(p, v, cost) then
    return dec(false, p.count, sw_remaining(p, v), sw_retry(p, v, cost, now), sw_reset(p, v, now)), false, s
  end
  v.cur = v.cur + cost
  return dec(true, p.count, sw_remaining(p, v), 0, sw_reset(p, v, now)), cost > 0, {v.index, v.prev, v.cur}
end
function sw.refund(p, s, now, cost)
  local v = sw.at(p, s, now)
  local before = v.cur
  v.cur = v.cur > cost and v.cur - cost or 0
  return {v.index, v.prev, v.cur}, v.cur ~= before
end

-- Quiet period: a = expiry in ms (rounded up), b = used or BLOCKED.
local qp = {}
local BLOCKED = 524287 -- 2^19 - 1, as kQuietBlocked
function qp.at(s, now)
  if s[2] ~= 0 and now < s[1] * MS then return {s[1], s[2], 0}, true end
  return {0, 0, 0}, false
end
local function qp_remaining(p, v)
  if v[2] == BLOCKED or v[2] >= p.count then return 0 end
  return p.count - v[2]
end
local function qp_reset(v, open, now) return open and v[1] * MS - now or 0 end
function qp.decide(p, s, now, cost)
  local v, open = qp.at(s, now)
  if cost > p.count then
    return dec(false, p.count, qp_remaining(p, v), NEVER, qp_reset(v, open, now), R_TOO_HIGH), false, s
  end
  if v[2] ~= BLOCKED and v[2] + cost <= p.count then
    if cost == 0 then return dec(true, p.count, qp_remaining(p, v), 0, qp_reset(v, open, now)), false, s end
    if not open then v[1] = ceil_div(now + p.period, MS) end
    v[2] = v[2] + cost
    return dec(true, p.count, qp_remaining(p, v), 0, qp_reset(v, true, now)), true, v
  end
  -- Denied: a real attempt restarts the period and blocks the key.
  if cost > 0 then
    v[1] = math.max(v[1], ceil_div(now + p.period, MS))
    v[2] = BLOCKED
  end
  local wait = qp_reset(v, open, now)
  return dec(false, p.count, 0, wait, wait), v[1] ~= s[1] or v[2] ~= s[2], v
end
function qp.refund(p, s, now, cost)
  local v = qp.at(s, now)
  local before = v[2]
  if v[2] ~= BLOCKED then v[2] = v[2] > cost and v[2] - cost or 0 end
  return v, v[2] ~= before
end


-- Sliding log (src/algorithms/sliding_log.cpp): at most count admissions in
-- any window of period ns; an admission at t leaves the window once
-- now >= t + D. Times are us since the Unix epoch (Redis TIME's unit), the
-- window D in ns: an entry is live while (now_us - t_us) * 1000 < D.
-- s = {key = Redis key, now_us}. Expired entries are removed on every read.
local LOG = 8
local lg = {}
local function lg_live(p, s)
  if s.live == nil then
    local cut = s.now_us - ceil_div(p.period, 1000) -- t_us <= cut: expired
    redis.call('ZREMRANGEBYSCORE', s.key, '-inf', num(cut))
    s.live = redis.call('ZCARD', s.key)
  end
  return s.live
end
local function lg_score(s, rank)
  local r = redis.call('ZRANGE', s.key, rank, rank, 'WITHSCORES')
  return tonumber(r[2])
end
-- ns from now until an admission at t_us leaves the window
local function lg_left(p, s, t_us) return (t_us - s.now_us) * 1000 + p.period end
function lg.decide(p, s, now, cost)
  local live = lg_live(p, s)
  local nfree = p.count > live and p.count - live or 0
  local reset = 0
  if live > 0 then reset = math.max(lg_left(p, s, lg_score(s, -1)), 0) end
  if cost > p.count then return dec(false, p.count, nfree, NEVER, reset, R_TOO_HIGH), false, s end
  if cost <= nfree then
    if cost > 0 then reset = math.max(reset, p.period) end
    return dec(true, p.count, nfree - cost, 0, reset), cost > 0, {key = s.key, now_us = s.now_us, add = cost}
  end
  local retry
  if p.align == 1 then
    -- DRF: (D - (now - oldest)) / (count - live + 1), rounded up to a ns
    local remaining = p.period
    if live > 0 then remaining = lg_left(p, s, lg_score(s, 0)) end
    local available = p.count + 1 - math.min(live, p.count)
    retry = ceil_div(math.max(remaining, 0), available)
  else
    -- the (cost - nfree)-th oldest admission to leave frees the last unit needed
    retry = lg_left(p, s, lg_score(s, cost - nfree - 1))
  end
  return dec(false, p.count, nfree, retry, reset), false, s
end
function lg.refund(p, s, now, cost)
  -- forgets the `cost` newest admissions, as the local refund
  local live = lg_live(p, s)
  if cost == 0 or live == 0 then return s, false end
  local k = math.min(cost, live)
  redis.call('ZREMRANGEBYRANK', s.key, -k, -1)
  s.live = live - k
  return s, false -- already written
end
-- Writes an admission of s.add units at s.now_us.
local function lg_store(p, s, reset_ns)
  local t = num(s.now_us)
  local n = redis.call('ZCOUNT', s.key, t, t)
  local j = 0
  while j < s.add do -- in chunks: unpack() has a stack limit
    local args = {}
    while j < s.add and #args < 1000 do
      args[#args + 1] = t
      args[#args + 1] = t .. ':' .. num(n + j)
      j = j + 1
    end
    redis.call('ZADD', s.key, unpack(args))
  end
  if TEST_CLOCK and ARGV[2] ~= '' then
    redis.call('PERSIST', s.key)
  else
    redis.call('PEXPIRE', s.key, ceil_div(reset_ns, MS))
  end
end

local ALGOS = {
  [1] = gcra, [6] = gcra,
  [2] = {decide = tb.decide, refund = tb.refund},
  [3] = {decide = fw.decide, refund = fw.refund},
  [4] = {decide = sw.decide, refund = sw.refund},
  [5] = {decide = qp.decide, refund = qp.refund},
  [LOG] = lg,
}

-- Moves a state's times back by S ns (S a multiple of the alignment and of
-- the period): a field that falls below 0 belonged to a full bucket.
local function shift(alg, p, s, S)
  if alg == 1 or alg == 6 then return gcra.shift(s, S) end
  if alg == 5 then
    local m = S / MS
    if s[1] < m then return {0, 0, 0} end
    return {s[1] - m, s[2], 0}
  end
  local w = S / p.period
  if s[1] < w then return {0, 0, 0} end
  return {s[1] - w, s[2], s[3]}
end


-- ---------------------------------------------------------------------------
-- Concurrency leases (algorithm 7; src/limiter/lease.cpp's decisions): a
-- sorted set per key, one member "<token>:<i>" per unit held, scored by its
-- expiry in us. Expired members are removed first; in flight = ZCARD.
--   take:    cost more fit under count: add them, expiring now + ttl
--   renew:   the token's members (if still there) expire now + ttl again
--   release: removes the token's members
-- Reply as the others; `granted` is 1 when the lease was taken, renewed or
-- released, 0 when it was refused or had already expired.
local CONC = 7
local function conc(op, now_us)
  local key = KEYS[1]
  local count, ttl, cost = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[10])
  local token = ARGV[3]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now_us))
  local n = redis.call('ZCARD', key)
  local expiry = now_us + ceil_div(ttl, 1000)
  local function report(allowed, inflight, reason, retry, granted)
    local d = dec(allowed, count, count > inflight and count - inflight or 0, retry or 0, 0, reason)
    d[7] = granted
    return d
  end
  if op == 'take' then
    -- as the segment: a cost that never fits is reported on an empty key;
    -- cost 0 is a look (allowed while a unit is free), nothing taken
    if cost > count then return report(false, 0, R_TOO_HIGH, NEVER, 0) end
    if cost == 0 then return report(n < count, n, R_OK, 0, 0) end
    if n + cost > count then return report(false, n, R_OK, 0, 0) end
    local j = 0
    while j < cost do
      local args = {}
      while j < cost and #args < 1000 do
        args[#args + 1] = num(expiry)
        args[#args + 1] = token .. ':' .. num(j)
        j = j + 1
      end
      redis.call('ZADD', key, unpack(args))
    end
    redis.call('PEXPIRE', key, ceil_div(ttl, MS))
    return report(true, n + cost, R_OK, 0, 1)
  end
  local held = redis.call('ZSCORE', key, token .. ':0')
  if not held then return report(false, n, R_OK, 0, 0) end
  if op == 'renew' then
    local j = 0
    while true do
      local m = token .. ':' .. num(j)
      if not redis.call('ZSCORE', key, m) then break end
      redis.call('ZADD', key, 'XX', num(expiry), m)
      j = j + 1
    end
    redis.call('PEXPIRE', key, ceil_div(ttl, MS))
    return report(true, n, R_OK, 0, 1)
  end
  -- release
  local j, gone = 0, 0
  while true do
    local m = token .. ':' .. num(j)
    if redis.call('ZREM', key, m) == 0 then break end
    gone = gone + 1
    j = j + 1
  end
  return report(true, n - gone, R_OK, 0, 1)
end
-- ---------------------------------------------------------------------------
local op = ARGV[1]
local now_us
if TEST_CLOCK and ARGV[2] ~= '' then
  now_us = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local need = tonumber(ARGV[3]) or 0

if tonumber(ARGV[4]) == CONC then
  if op == 'take' or op == 'renew' or op == 'release' then return conc(op, now_us) end
  return {0, tonumber(ARGV[5]), 0, 0, 0, 8, 0} -- needs_lease: not a bucket
end

-- The bucket of KEYS[i] under policy p, as stored (its time origin moved
-- or restarted as above).
local function load(i, p, cost)
  if p.alg == LOG then
    return {key = KEYS[i], p = p, cost = cost, s = {key = KEYS[i], now_us = now_us}, now = 0,
            algo = lg, log = true}
  end
  local h = redis.call('HMGET', KEYS[i], 'o', 'a', 'b', 'c')
  local origin = tonumber(h[1])
  local s = {tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0}
  local fresh = origin == nil
  local now = 0
  if not fresh then
    now = (now_us - origin) * 1000
    if now >= STALE_AT then fresh = true end
  end
  if fresh then
    local _, off = idiv(now_us, p.align)
    origin = now_us - off
    s = {0, 0, 0}
    now = (now_us - origin) * 1000
  elseif now < 0 then
    now = 0 -- the server clock stepped back past the origin: as an older reading
  elseif now >= REBASE_AT then
    local step = p.align * 1000
    local S = (idiv(now - KEEP, step)) * step
    s = shift(p.alg, p, s, S)
    origin = origin + S / 1000
    now = now - S
  end
  return {key = KEYS[i], p = p, cost = cost, s = s, origin = origin, now = now, algo = ALGOS[p.alg]}
end

-- A limit named more than once (the same key: the same policy and key) is
-- one bucket, loaded once: mention i is decided on the bucket of its key's
-- first mention, buckets[mention[i]], for asked[i] = the costs of its key's
-- mentions up to i together (saturating: 2^64 - 1 parses as 2^64, above
-- every capacity), as Limiter::acquire_many asks its k-th mention.
local U64_MAX = 18446744073709551615
local n = #KEYS
local buckets, mention, cost_of, asked, first, sum = {}, {}, {}, {}, {}, {}
for i = 1, n do
  local base = 3 + (i - 1) * 7
  local p = {
    alg = tonumber(ARGV[base + 1]), count = tonumber(ARGV[base + 2]), period = tonumber(ARGV[base + 3]),
    burst = tonumber(ARGV[base + 4]), emission = tonumber(ARGV[base + 5]), align = tonumber(ARGV[base + 6]),
  }
  local cost = tonumber(ARGV[base + 7])
  cost_of[i] = cost
  local j = first[KEYS[i]]
  if j == nil then
    first[KEYS[i]] = i
    mention[i], sum[i], asked[i] = i, cost, cost
    buckets[i] = load(i, p, cost)
  else
    mention[i] = j
    sum[j] = math.min(sum[j] + cost, U64_MAX)
    asked[i] = sum[j]
  end
end

local function store(b, s)
  if b.log then
    -- s.add units admitted now: the key lives until the newest leaves the window
    lg_store(b.p, s, b.p.period)
    return
  end
  local peek = b.algo.decide(b.p, s, b.now, 0)
  local reset = peek[5]
  if reset <= 0 then
    redis.call('DEL', b.key)
    return
  end
  redis.call('HSET', b.key, 'o', num(b.origin), 'a', num(s[1]), 'b', num(s[2]), 'c', num(s[3]))
  if TEST_CLOCK and ARGV[2] ~= '' then
    redis.call('PERSIST', b.key) -- injected time: Redis's own clock must not expire it
  else
    redis.call('PEXPIRE', b.key, ceil_div(reset, MS))
  end
end

local out = {}
local function put(d, granted)
  for j = 1, 6 do out[#out + 1] = d[j] end
  out[#out + 1] = granted
end

for i = 1, n do
  if buckets[mention[i]].algo == nil then
    for _ = 1, n do put(dec(false, 0, 0, 0, 0, R_CORRUPT), 0) end
    return out
  end
end

if op == 'refund' then
  -- Every mention gives its cost back, one after the other on its key's
  -- bucket; each reports its bucket as all the refunds left it.
  for i = 1, n do
    local b = buckets[mention[i]]
    local s, changed = b.algo.refund(b.p, b.s, b.now, cost_of[i])
    b.s = s
    if changed then store(b, s) end
  end
  for i = 1, n do
    local b = buckets[mention[i]]
    put((b.algo.decide(b.p, b.s, b.now, 0)), 0)
  end
  return out
end

if op == 'lease' then
  local b = buckets[1]
  local peek = b.algo.decide(b.p, b.s, b.now, 0)
  local want = b.cost
  if peek[3] >= need and need <= want then
    local grant = math.min(want, peek[3])
    local d, st, s = b.algo.decide(b.p, b.s, b.now, grant)
    if d[1] == 1 then
      if st then store(b, s) end
      put(d, grant)
      return out
    end
  end
  local d, st, s = b.algo.decide(b.p, b.s, b.now, need)
  if st then store(b, s) end
  put(d, d[1] == 1 and need or 0)
  return out
end

-- Every mention decides its asked cost on its bucket as loaded: the request
-- is admitted only when all admit (one key alone, op 'acquire': as
-- Limiter::acquire).
local results, all = {}, true
for i = 1, n do
  local b = buckets[mention[i]]
  local d, st, s = b.algo.decide(b.p, b.s, b.now, asked[i])
  results[i] = {d = d, st = st, s = s}
  if d[1] ~= 1 then all = false end
end
-- Part of a request of several limits ('many', or 'acquire' of several
-- keys): nothing is written unless all admit.
local multi = op == 'many' or (op == 'acquire' and n > 1)
if op == 'acquire' and n == 1 then
  if results[1].st then store(buckets[1], results[1].s) end
elseif multi and all then
  -- Charge the mentions one after the other, each its own cost on its
  -- bucket as the earlier ones left it (the decisions it reports, as
  -- Limiter::acquire_many's charges). Each admits: its bucket admitted the
  -- costs so far together above. A bucket is stored once, at the end; a
  -- log's admissions are written as they are made (the next mention reads
  -- them back).
  local dirty = {}
  for i = 1, n do
    local j = mention[i]
    local b = buckets[j]
    local d, st, s = b.algo.decide(b.p, b.s, b.now, cost_of[i])
    results[i].d = d
    if st then
      if b.log then
        store(b, s)
        b.s = {key = b.key, now_us = now_us}
      else
        b.s = s
        dirty[j] = true
      end
    end
  end
  for i = 1, n do
    if dirty[i] then store(buckets[i], buckets[i].s) end
  end
end
for i = 1, n do
  local d = results[i].d
  if multi and not all and d[1] == 1 then
    -- Refused, so this limit was not charged: report its bucket as it is
    -- (remaining and reset-after of a cost-0 decision), as the local
    -- Limiter::acquire_many does.
    local b = buckets[mention[i]]
    local as_is = b.algo.decide(b.p, b.s, b.now, 0)
    d = {d[1], d[2], as_is[3], d[4], as_is[5], d[6]}
  end
  put(d, 0)
end
return out
