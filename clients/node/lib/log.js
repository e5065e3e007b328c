'use strict';

// Logging: every event is a message and an object of fields. The default logger writes
// it to the console as one line, `pyvault-tokens: token rejected token=ovt_prod_1a2b…
// reason=TOKEN_INVALID message="Token has been revoked"` (logfmt-style), so a log
// collector sees one record per event; a given logger gets (message, fields) as before.

const BARE = /^[^\s="\\]+$/;

function formatValue(value) {
  let text;
  if (value instanceof Date) text = Number.isNaN(value.getTime()) ? String(value) : value.toISOString();
  else if (typeof value === 'string') text = value;
  else if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') text = String(value);
  else text = JSON.stringify(value) ?? String(value);
  // JSON string quoting escapes quotes, backslashes and every control character
  // (newlines included), so a value can never break the line.
  return BARE.test(text) ? text : JSON.stringify(text);
}

function formatLine(message, fields) {
  let line = message;
  if (fields && typeof fields === 'object') {
    for (const [key, value] of Object.entries(fields)) {
      if (value === undefined || value === null) continue;
      line += ` ${key}=${formatValue(value)}`;
    }
  }
  return line;
}

// console.info goes to stdout, console.warn and console.error to stderr.
const lineLogger = {
  info: (message, fields) => console.info(formatLine(message, fields)),
  warn: (message, fields) => console.warn(formatLine(message, fields)),
  error: (message, fields) => console.error(formatLine(message, fields)),
};

function makeLog(logger) {
  return function log(level, message, fields) {
    if (!logger) return;
    const fn = typeof logger[level] === 'function' ? logger[level] : logger.log;
    if (typeof fn !== 'function') return;
    try {
      fn.call(logger, `pyvault-tokens: ${message}`, fields);
    } catch {
      // A failing logger must not fail the request.
    }
  };
}

module.exports = { lineLogger, formatLine, makeLog };
