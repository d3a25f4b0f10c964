/* The tiny JSON reader of the C reference plugins (see include/span_json.h). */
#include "span_json.h"

#include <string.h>

static void ws(span s, size_t *i) {
    while (*i < s.n && (s.p[*i] == ' ' || s.p[*i] == '\t' || s.p[*i] == '\n' || s.p[*i] == '\r')) (*i)++;
}

span js_cstr(const char *s) {
    span r = {s, s ? strlen(s) : 0};
    return r;
}

static int skip_string(span s, size_t *i) {
    if (*i >= s.n || s.p[*i] != '"') return -1;
    for ((*i)++; *i < s.n; (*i)++) {
        if (s.p[*i] == '\\') {
            (*i)++;
            continue;
        }
        if (s.p[*i] == '"') {
            (*i)++;
            return 0;
        }
    }
    return -1;
}

int js_skip(span s, size_t *i) {
    ws(s, i);
    if (*i >= s.n) return -1;
    char c = s.p[*i];
    if (c == '"') return skip_string(s, i);
    if (c == '{' || c == '[') {
        /* Nested containers: count depth, skipping strings whole. */
        int depth = 0;
        while (*i < s.n) {
            char d = s.p[*i];
            if (d == '"') {
                if (skip_string(s, i) != 0) return -1;
                continue;
            }
            if (d == '{' || d == '[') depth++;
            if (d == '}' || d == ']') {
                depth--;
                if (depth == 0) {
                    (*i)++;
                    return 0;
                }
            }
            (*i)++;
        }
        return -1;
    }
    /* number, true, false, null */
    size_t start = *i;
    while (*i < s.n && s.p[*i] != ',' && s.p[*i] != '}' && s.p[*i] != ']' && s.p[*i] != ' ' && s.p[*i] != '\n' &&
           s.p[*i] != '\t' && s.p[*i] != '\r')
        (*i)++;
    return *i > start ? 0 : -1;
}

int js_object_next(span obj, size_t *pos, span *key, span *val) {
    size_t i = *pos;
    if (i == 0) {
        ws(obj, &i);
        if (i >= obj.n || obj.p[i] != '{') return 0;
        i++;
    }
    ws(obj, &i);
    if (i < obj.n && obj.p[i] == ',') i++;
    ws(obj, &i);
    if (i >= obj.n || obj.p[i] != '"') return 0;
    size_t ks = i;
    if (skip_string(obj, &i) != 0) return 0;
    key->p = obj.p + ks + 1;
    key->n = i - ks - 2;
    ws(obj, &i);
    if (i >= obj.n || obj.p[i] != ':') return 0;
    i++;
    ws(obj, &i);
    size_t vs = i;
    if (js_skip(obj, &i) != 0) return 0;
    val->p = obj.p + vs;
    val->n = i - vs;
    *pos = i;
    return 1;
}

int js_get(span obj, const char *key, span *out) {
    size_t pos = 0, kl = strlen(key);
    span k, v;
    while (js_object_next(obj, &pos, &k, &v)) {
        if (k.n == kl && memcmp(k.p, key, kl) == 0) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

int js_array_next(span arr, size_t *pos, span *elem) {
    size_t i = *pos;
    if (i == 0) {
        ws(arr, &i);
        if (i >= arr.n || arr.p[i] != '[') return 0;
        i++;
    }
    ws(arr, &i);
    if (i < arr.n && arr.p[i] == ',') i++;
    ws(arr, &i);
    if (i >= arr.n || arr.p[i] == ']') return 0;
    size_t vs = i;
    if (js_skip(arr, &i) != 0) return 0;
    elem->p = arr.p + vs;
    elem->n = i - vs;
    *pos = i;
    return 1;
}

int js_int(span v, int64_t *out) {
    size_t i = 0;
    int neg = 0;
    int64_t x = 0;
    if (i < v.n && v.p[i] == '-') {
        neg = 1;
        i++;
    }
    if (i >= v.n || v.p[i] < '0' || v.p[i] > '9') return 0;
    for (; i < v.n && v.p[i] >= '0' && v.p[i] <= '9'; i++) {
        if (x > (INT64_MAX - 9) / 10) return 0;
        x = x * 10 + (v.p[i] - '0');
    }
    /* Accept a fractional part of zeros ("3.0"), refuse anything else. */
    if (i < v.n && v.p[i] == '.') {
        for (i++; i < v.n && v.p[i] == '0'; i++) {}
    }
    if (i != v.n) return 0;
    *out = neg ? -x : x;
    return 1;
}

int js_bool(span v) {
    if (v.n == 4 && memcmp(v.p, "true", 4) == 0) return 1;
    if (v.n == 5 && memcmp(v.p, "false", 5) == 0) return 0;
    return -1;
}

int js_str(span v, char *buf, size_t cap) {
    if (v.n < 2 || v.p[0] != '"' || v.p[v.n - 1] != '"' || cap == 0) return 0;
    size_t o = 0;
    for (size_t i = 1; i + 1 < v.n; i++) {
        char c = v.p[i];
        if (c == '\\' && i + 2 < v.n) {
            char e = v.p[++i];
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'u': return 0; /* names never need \u escapes; refuse rather than mangle */
            default: c = e; break;
            }
        }
        if (o + 1 >= cap) return 0;
        buf[o++] = c;
    }
    buf[o] = 0;
    return 1;
}

int js_str_eq(span v, const char *lit) {
    size_t n = strlen(lit);
    return v.n == n + 2 && v.p[0] == '"' && memcmp(v.p + 1, lit, n) == 0 && v.p[n + 1] == '"';
}

int js_quote(const char *s, char *buf, size_t cap) {
    size_t o = 0;
    if (cap < 3) return -1;
    buf[o++] = '"';
    for (; *s; s++) {
        char c = *s;
        const char *esc = NULL;
        char tmp[8];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if ((unsigned char)c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            tmp[0] = '\\'; tmp[1] = 'u'; tmp[2] = '0'; tmp[3] = '0';
            tmp[4] = hex[(c >> 4) & 15]; tmp[5] = hex[c & 15]; tmp[6] = 0;
            esc = tmp;
        }
        if (esc) {
            size_t n = strlen(esc);
            if (o + n + 2 > cap) return -1;
            memcpy(buf + o, esc, n);
            o += n;
        } else {
            if (o + 3 > cap) return -1;
            buf[o++] = c;
        }
    }
    buf[o++] = '"';
    buf[o] = 0;
    return (int)o;
}
