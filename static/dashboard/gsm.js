/* How a text will travel: encoding, length and parts, as the gateway will cut it.
 *
 * Mirrors messaging/encoding.py and messaging/splitting.py: GSM 03.38 basic and
 * extension tables (an extension character costs two septets), "auto" = GSM-7
 * when every character fits, else UCS-2; parts never split an escape pair, a
 * surrogate pair or a UTF-8 sequence. tests/test_dashboard.py checks the tables
 * against the server's.
 */
"use strict";

const SmsText = (() => {
  // Code points 0x00..0x7F of the basic table, ESC (0x1B) left out.
  const GSM_BASIC =
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  // The extension table: each is ESC + a code, two septets.
  const GSM_EXTENSION = "\f^{}\\[~]|€";

  const basic = new Set(GSM_BASIC);
  const extension = new Set(GSM_EXTENSION);

  // Units in one SMS, and per part of a long text: [single, 8-bit ref UDH, 16-bit ref UDH].
  const CAPACITY = {
    gsm7: [160, 153, 152],
    ucs2: [70, 67, 66],
    latin1: [140, 134, 133],
    raw: [140, 134, 133],
  };
  const UNIT = { gsm7: "septets", ucs2: "UTF-16 units", latin1: "octets", raw: "octets" };
  const LABEL = { gsm7: "GSM-7", ucs2: "UCS-2", latin1: "Latin-1", raw: "raw UTF-8" };

  const utf8 = new TextEncoder();

  /* What a character costs in ``encoding``, or null when it cannot be carried. */
  function cost(char, encoding) {
    const code = char.codePointAt(0);
    switch (encoding) {
      case "gsm7":
        if (basic.has(char)) return 1;
        return extension.has(char) ? 2 : null;
      case "ucs2":
        return code > 0xffff ? 2 : 1;
      case "latin1":
        return code <= 0xff ? 1 : null;
      default: // raw
        return utf8.encode(char).length;
    }
  }

  function describe(char) {
    const hex = char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
    const printable = /\S/u.test(char) && !/\p{C}/u.test(char);
    return printable ? `“${char}” (U+${hex})` : `U+${hex}`;
  }

  /* Everything the send form shows about ``text`` sent with ``requested`` encoding. */
  function analyse(text, requested = "auto", concat = "udh") {
    const chars = Array.from(text); // code points, so a surrogate pair is one character
    let encoding = requested;
    const forcedBy = [];
    if (requested === "auto") {
      for (const char of chars) {
        if (cost(char, "gsm7") === null && !forcedBy.includes(char)) forcedBy.push(char);
      }
      encoding = forcedBy.length ? "ucs2" : "gsm7";
    }
    const costs = [];
    let bad = null;
    let badAt = -1;
    chars.forEach((char, index) => {
      const c = cost(char, encoding);
      if (c === null && bad === null) {
        bad = char;
        badAt = index;
      }
      costs.push(c ?? 1);
    });
    const [single, multi8, multi16] = CAPACITY[encoding];
    const perPart = concat === "udh16" ? multi16 : multi8;
    const units = costs.reduce((a, b) => a + b, 0);
    let parts = 0;
    let lastPartUnits = 0;
    if (units > 0 && units <= single) {
      parts = 1;
      lastPartUnits = units;
    } else if (units > single) {
      // Greedy, like the server: a character that does not fit whole starts the next part.
      parts = 1;
      for (const c of costs) {
        if (lastPartUnits + c > perPart) {
          parts += 1;
          lastPartUnits = 0;
        }
        lastPartUnits += c;
      }
    }
    const capacity = parts <= 1 ? single : perPart;
    return {
      characters: chars.length,
      encoding,
      label: LABEL[encoding],
      unit: UNIT[encoding],
      units,
      parts,
      capacity,
      left: parts === 0 ? single : capacity - lastPartUnits,
      forcedBy,
      bad: bad === null ? null : { char: bad, position: badAt, text: describe(bad) },
    };
  }

  return { analyse, describe, GSM_BASIC, GSM_EXTENSION, CAPACITY, LABEL };
})();

if (typeof window !== "undefined") window.SmsText = SmsText;
