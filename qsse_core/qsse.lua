#!lua name=qsse
-- qsse's store in Redis: one id sequence, a bounded stream per declared topic, one Pub/Sub
-- channel. Every key of a store starts with the hash tag {PREFIX}, so a store fits one Redis
-- Cluster slot. The layout, the functions and their arguments are described in docs/redis.md.

local DEFAULT_MAX_EVENTS = 1000
local DEFAULT_MAX_BYTES = 1048576

local function key(prefix, name)
  return '{' .. prefix .. '}:' .. name
end

local function fmt(n)
  return string.format('%.0f', n)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A new epoch: what is left of the old one's history carries ids that mean nothing now.
local function new_epoch(prefix)
  local t = redis.call('TIME')
  local epoch = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local old = tonumber(redis.call('GET', key(prefix, 'epoch')) or '0')
  if epoch <= old then
    epoch = old + 1
  end
  for _, label in ipairs(redis.call('SMEMBERS', key(prefix, 'labels'))) do
    redis.call('DEL', key(prefix, 'stream:' .. label))
  end
  redis.call('DEL', key(prefix, 'evicted'), key(prefix, 'bytes'), key(prefix, 'ms'))
  redis.call('SET', key(prefix, 'seq'), 0)
  redis.call('SET', key(prefix, 'epoch'), fmt(epoch))
  return fmt(epoch)
end

-- Evict from the oldest end while any bound of the topic's policy is exceeded, as qsse's
-- in-memory history does, and remember the newest evicted id (gap notices name it).
local function trim(prefix, label, stream, horizon_now)
  local policy = redis.call('HMGET', key(prefix, 'policy:' .. label),
    'max_events', 'max_bytes', 'max_age_ms')
  local max_events = tonumber(policy[1]) or DEFAULT_MAX_EVENTS
  local max_bytes = tonumber(policy[2]) or DEFAULT_MAX_BYTES
  local max_age = tonumber(policy[3])
  local horizon = nil
  if max_age then
    horizon = horizon_now - max_age
  end
  local n = redis.call('XLEN', stream)
  local bytes = tonumber(redis.call('HGET', key(prefix, 'bytes'), label) or '0')
  local evicted = nil
  while n > 0 do
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    local sid = first[1]
    local dash = string.find(sid, '-', 1, true)
    local ms = tonumber(string.sub(sid, 1, dash - 1))
    if not (n > max_events or bytes > max_bytes or (horizon and ms < horizon)) then
      break
    end
    local fields = first[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'data' then
        bytes = bytes - #fields[i + 1]
      end
    end
    redis.call('XDEL', stream, sid)
    n = n - 1
    evicted = string.sub(sid, dash + 1)
  end
  redis.call('HSET', key(prefix, 'bytes'), label, fmt(bytes))
  if evicted then
    redis.call('HSET', key(prefix, 'evicted'), label, evicted)
  end
end

-- FCALL qsse_publish 0 PREFIX LABEL TOPIC CONTENT_TYPE DATA -> id
local function publish(keys, args)
  local prefix, label, topic, content_type, data = args[1], args[2], args[3], args[4], args[5]
  if #args ~= 5 then
    return redis.error_reply('ERR qsse_publish expects PREFIX LABEL TOPIC CONTENT_TYPE DATA, got '
      .. #args .. ' arguments')
  end
  local ct = tonumber(content_type)
  if not ct or ct < 0 or ct > 65535 or ct % 1 ~= 0 or string.find(content_type, '[^0-9]') then
    return redis.error_reply('ERR qsse_publish: CONTENT_TYPE must be an integer 0-65535, got '
      .. content_type)
  end
  if label == '' or topic == '' then
    return redis.error_reply('ERR qsse_publish: LABEL and TOPIC must not be empty')
  end
  -- Checked above, before any write: a script's writes are not rolled back on error.
  local epoch = redis.call('GET', key(prefix, 'epoch'))
  if not epoch then
    epoch = new_epoch(prefix)
  end
  local id = redis.call('INCR', key(prefix, 'seq'))
  -- Stream ids are MS-ID: milliseconds (never going back, so ids stay ordered) and our id.
  local ms = now_ms()
  local last_ms = tonumber(redis.call('GET', key(prefix, 'ms')) or '0')
  if ms < last_ms then
    ms = last_ms
  end
  redis.call('SET', key(prefix, 'ms'), fmt(ms))
  local stream = key(prefix, 'stream:' .. label)
  redis.call('SADD', key(prefix, 'labels'), label)
  redis.call('XADD', stream, fmt(ms) .. '-' .. fmt(id),
    'topic', topic, 'ct', content_type, 'data', data)
  redis.call('HINCRBY', key(prefix, 'bytes'), label, #data)
  trim(prefix, label, stream, ms)
  local header = epoch .. ' ' .. fmt(id) .. ' ' .. fmt(ms) .. ' ' .. content_type .. ' '
    .. #label .. ' ' .. #topic .. '\n'
  redis.call('PUBLISH', key(prefix, 'events'), header .. label .. topic .. data)
  return id
end

-- FCALL qsse_hello 0 PREFIX KNOWN_EPOCH KNOWN_ID -> {epoch, newest id}
-- A node that saw KNOWN_ID in KNOWN_EPOCH and finds the sequence behind it knows Redis lost
-- data (an older snapshot came back): a new epoch turns that silent loss into a gap.
local function hello(keys, args)
  local prefix, known_epoch, known_id = args[1], args[2], tonumber(args[3] or '0') or 0
  local epoch = redis.call('GET', key(prefix, 'epoch'))
  local seq = tonumber(redis.call('GET', key(prefix, 'seq')) or '0')
  if not epoch or (epoch == known_epoch and seq < known_id) then
    epoch = new_epoch(prefix)
    seq = 0
  end
  return {epoch, fmt(seq)}
end

-- FCALL qsse_trim 0 PREFIX LABEL -> the newest evicted id of LABEL (0 when none)
-- Applies the age bound when nothing is published on a topic for a while.
local function trim_fn(keys, args)
  local prefix, label = args[1], args[2]
  local stream = key(prefix, 'stream:' .. label)
  if redis.call('EXISTS', stream) == 1 then
    trim(prefix, label, stream, now_ms())
  end
  return tonumber(redis.call('HGET', key(prefix, 'evicted'), label) or '0')
end

-- FCALL qsse_rotate 0 PREFIX EPOCH -> the epoch now
-- A node that finds an event it received missing from Redis (neither held nor evicted) knows
-- Redis rewound past it and reissued its id: a new epoch, unless another node already made one.
local function rotate(keys, args)
  local prefix, known_epoch = args[1], args[2]
  local epoch = redis.call('GET', key(prefix, 'epoch'))
  if not epoch or epoch == known_epoch then
    epoch = new_epoch(prefix)
  end
  return epoch
end

redis.register_function('qsse_publish', publish)
redis.register_function('qsse_rotate', rotate)
redis.register_function('qsse_hello', hello)
redis.register_function('qsse_trim', trim_fn)
