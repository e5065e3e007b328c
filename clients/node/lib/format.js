'use strict';

// The token format of pyvault-tokens: `ovt_prod_` followed by 64 lower-case hex
// characters (73 characters, all ASCII). Checked by length, prefix and a loop over the
// character codes, so a malformed token costs no database query and no regex.

const TOKEN_PREFIX = 'ovt_prod_';
const TOKEN_LENGTH = 73;
const LOG_PREFIX_LENGTH = 13;

function isWellFormedToken(token) {
  if (typeof token !== 'string' || token.length !== TOKEN_LENGTH || !token.startsWith(TOKEN_PREFIX)) {
    return false;
  }
  for (let i = TOKEN_PREFIX.length; i < TOKEN_LENGTH; i++) {
    const c = token.charCodeAt(i);
    // 0-9 or a-f
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

// What a log line may show of a token: its first 13 characters and an ellipsis.
// Only ever called on well-formed tokens, so the prefix is never the whole secret.
function tokenPrefix(token) {
  return `${token.slice(0, LOG_PREFIX_LENGTH)}\u2026`;
}

const TOKEN_ANYWHERE = /ovt_prod_[0-9A-Za-z]{4}[0-9A-Za-z]*/g;

// Replace anything that looks like a token in free text (an error message, say) with
// its prefix, so no log line can carry a whole token.
function redact(text) {
  if (text == null) return text;
  return String(text).replace(TOKEN_ANYWHERE, (t) => tokenPrefix(t));
}

module.exports = { TOKEN_PREFIX, TOKEN_LENGTH, isWellFormedToken, tokenPrefix, redact };
