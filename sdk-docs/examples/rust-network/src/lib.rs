//! rustnet — the C example network plugin (sdk-docs/examples/c-network/netplug.c) in Rust, with no crates.
//!
//! Same behaviour and the same key layout in the host's key-value namespace, so the two are interchangeable:
//!
//!   cfg/subnet        the subnet this namespace was initialised for
//!   next              decimal host offset of the next never-used address (starts at 1)
//!   active            decimal count of addresses in use
//!   free/<hex addr>   released addresses below `next`, found in O(log n) with kv_next
//!   ip/<hex addr>     owner of an address: "<ifname>/<containerID>"
//!   att/<ifname>/<containerID>   the attachment's address, 8 hex digits
//!
//! Rules for Rust plugins shown here:
//!   * every `extern "C"` function the host calls runs its body inside `std::panic::catch_unwind`; a panic
//!     becomes BERTH_INTERNAL with a message instead of unwinding into the host (undefined behaviour, and
//!     since Rust 1.81 an abort of the whole daemon);
//!   * nothing allocated here is freed by the host or the other way round: output goes through the sink,
//!     errors into the caller's buffer;
//!   * the descriptor is a `static`, valid for the life of the process (the host never dlcloses).
//!
//! Build: cargo build --offline --release --manifest-path sdk-docs/examples/rust-network/Cargo.toml \
//!            --target-dir /tmp/berth-rust-target
mod abi;
mod json;

use abi::*;
use json::{quote, Json};
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

// ------------------------------------------------------------------------------------------------------
// Errors and the boundary guard
// ------------------------------------------------------------------------------------------------------

struct Error {
    status: Status,
    message: String,
}

fn fail<T>(status: Status, message: impl Into<String>) -> Result<T, Error> {
    Err(Error { status, message: message.into() })
}

/// Writes a NUL-terminated message into the caller's buffer, truncated to `cap - 1` bytes.
unsafe fn write_err(err: *mut c_char, cap: usize, msg: &str) {
    if err.is_null() || cap == 0 {
        return;
    }
    let mut n = msg.len().min(cap - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    std::ptr::copy_nonoverlapping(msg.as_ptr(), err as *mut u8, n);
    *err.add(n) = 0;
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into())
}

/// Runs `body` behind catch_unwind and maps its result onto the ABI: output to the sink, error to `err`.
unsafe fn guard(what: &str, out: *const Sink, err: *mut c_char, cap: usize, body: impl FnOnce() -> Result<String, Error>) -> Status {
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), Error> {
        let text = body()?;
        if text.is_empty() || out.is_null() {
            return Ok(());
        }
        let sink = &*out;
        let write = match sink.write {
            Some(w) => w,
            None => return fail(BERTH_INTERNAL, "the host passed a sink without a write function"),
        };
        match write(sink.ctx, text.as_ptr() as *const c_char, text.len()) {
            BERTH_OK => Ok(()),
            st => fail(st, format!("{what}: the host refused the output ({} bytes)", text.len())),
        }
    }));
    match result {
        Ok(Ok(())) => BERTH_OK,
        Ok(Err(e)) => {
            write_err(err, cap, &e.message);
            e.status
        }
        Err(payload) => {
            write_err(err, cap, &format!("panic in {what}: {}", panic_message(&*payload)));
            BERTH_INTERNAL
        }
    }
}

unsafe fn bytes<'a>(p: *const c_char, n: usize) -> &'a [u8] {
    if p.is_null() || n == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(p as *const u8, n)
    }
}

// ------------------------------------------------------------------------------------------------------
// Host services, safely
// ------------------------------------------------------------------------------------------------------

unsafe extern "C" fn vec_write(ctx: *mut c_void, data: *const c_char, len: usize) -> Status {
    let v = &mut *(ctx as *mut Vec<u8>);
    v.extend_from_slice(bytes(data, len));
    BERTH_OK
}

fn vec_sink(v: &mut Vec<u8>) -> Sink {
    Sink { struct_size: std::mem::size_of::<Sink>() as u32, ctx: v as *mut Vec<u8> as *mut c_void, write: Some(vec_write) }
}

/// The host services table (valid until destroy() returns).
#[derive(Clone, Copy)]
struct Host(*const HostServices);

impl Host {
    fn s(&self) -> &HostServices {
        unsafe { &*self.0 }
    }

    fn check(st: Status, what: &str, key: &[u8]) -> Result<(), Error> {
        if st == BERTH_OK {
            return Ok(());
        }
        fail(st, format!("host {what}({}) failed with status {st}", String::from_utf8_lossy(key)))
    }

    fn log(&self, level: u32, msg: &str) {
        if let Some(f) = self.s().log {
            unsafe { f(self.s().host_ctx, level, msg.as_ptr() as *const c_char, msg.len()) }
        }
    }

    fn get(&self, key: &str) -> Result<Option<String>, Error> {
        let mut v = Vec::new();
        let sink = vec_sink(&mut v);
        let f = self.s().kv_get.ok_or_else(|| Error { status: BERTH_INTERNAL, message: "host has no kv_get".into() })?;
        let st = unsafe { f(self.s().host_ctx, key.as_ptr() as *const c_char, key.len(), &sink) };
        if st == BERTH_NOT_FOUND {
            return Ok(None);
        }
        Self::check(st, "kv_get", key.as_bytes())?;
        Ok(Some(String::from_utf8_lossy(&v).into_owned()))
    }

    fn put(&self, key: &str, value: &str) -> Result<(), Error> {
        let f = self.s().kv_put.ok_or_else(|| Error { status: BERTH_INTERNAL, message: "host has no kv_put".into() })?;
        let st = unsafe { f(self.s().host_ctx, key.as_ptr() as *const c_char, key.len(), value.as_ptr() as *const c_char, value.len()) };
        Self::check(st, "kv_put", key.as_bytes())
    }

    fn delete(&self, key: &[u8]) -> Result<(), Error> {
        let f = self.s().kv_delete.ok_or_else(|| Error { status: BERTH_INTERNAL, message: "host has no kv_delete".into() })?;
        let st = unsafe { f(self.s().host_ctx, key.as_ptr() as *const c_char, key.len()) };
        Self::check(st, "kv_delete", key)
    }

    /// The first key under `prefix` strictly after `after` (empty: from the prefix). O(log n).
    fn next(&self, prefix: &str, after: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let mut k = Vec::new();
        let sink = vec_sink(&mut k);
        let f = self.s().kv_next.ok_or_else(|| Error { status: BERTH_INTERNAL, message: "host has no kv_next".into() })?;
        let st = unsafe {
            f(self.s().host_ctx, prefix.as_ptr() as *const c_char, prefix.len(), after.as_ptr() as *const c_char, after.len(), &sink, std::ptr::null())
        };
        if st == BERTH_NOT_FOUND {
            return Ok(None);
        }
        Self::check(st, "kv_next", prefix.as_bytes())?;
        Ok(Some(k))
    }

    fn get_u32(&self, key: &str, default: u32) -> Result<u32, Error> {
        Ok(self.get(key)?.and_then(|s| s.parse().ok()).unwrap_or(default))
    }

    /// Appends an event; inside an operation it commits with it.
    fn emit(&self, ty: &CStr, json: &str) -> Result<(), Error> {
        let f = self.s().emit_event.ok_or_else(|| Error { status: BERTH_INTERNAL, message: "host has no emit_event".into() })?;
        let st = unsafe { f(self.s().host_ctx, ty.as_ptr(), json.as_ptr() as *const c_char, json.len()) };
        Self::check(st, "emit_event", ty.to_bytes())
    }
}

// ------------------------------------------------------------------------------------------------------
// The plugin
// ------------------------------------------------------------------------------------------------------

/// The instance: its configuration only. All state is in the host's namespace.
struct NetPlug {
    host: Host,
    net: u32,
    prefix: u32,
    size: u32,
    gw: u32,
    subnet: String,
    gateway: String,
}

fn parse_ipv4(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    parts.iter().try_fold(0u32, |acc, p| p.parse::<u8>().ok().map(|o| acc << 8 | o as u32))
}

fn ipv4(a: u32) -> String {
    format!("{}.{}.{}.{}", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255)
}

/// The attachment key of a request.
struct Key {
    cid: String,
    ifname: String,
}

impl Key {
    fn owner(&self) -> String {
        format!("{}/{}", self.ifname, self.cid)
    }

    fn from(obj: &Json) -> Result<Key, Error> {
        let cid = match obj.get("containerID") {
            None => return fail(BERTH_INVALID_ARGUMENT, "containerID is required"),
            Some(Json::Str(s)) if !s.is_empty() && s.len() <= 256 && !s.contains('\0') => s.clone(),
            Some(_) => return fail(BERTH_INVALID_ARGUMENT, "containerID must be a non-empty string of at most 256 bytes without NUL"),
        };
        let ifname = match obj.get("ifname") {
            None => "eth0".to_string(),
            Some(Json::Str(s)) if !s.is_empty() && s.len() <= 15 && !s.contains('/') && !s.contains('\0') => s.clone(),
            Some(_) => return fail(BERTH_INVALID_ARGUMENT, "ifname must be a string of 1-15 bytes without '/'"),
        };
        Ok(Key { cid, ifname })
    }
}

fn request(req: &[u8]) -> Result<Json, Error> {
    match Json::parse(req) {
        Some(v @ Json::Obj(_)) => Ok(v),
        _ => fail(BERTH_INVALID_ARGUMENT, "the request is not a well-formed JSON object"),
    }
}

impl NetPlug {
    fn create(host: Host, config: &[u8]) -> Result<NetPlug, Error> {
        let cfg = request(config)?;
        let subnet = cfg.get("subnet").and_then(Json::as_str).unwrap_or("");
        let (ip, prefix) = subnet.split_once('/').unwrap_or((subnet, ""));
        let (net, prefix) = match (parse_ipv4(ip), prefix.parse::<u32>()) {
            (Some(n), Ok(p)) if (8..=30).contains(&p) => (n, p),
            _ => return fail(BERTH_INVALID_ARGUMENT, format!("subnet \"{subnet}\": expected an IPv4 subnet from /8 to /30, e.g. \"10.77.0.0/24\"")),
        };
        let size = 1u32 << (32 - prefix);
        if net & (size - 1) != 0 {
            return fail(BERTH_INVALID_ARGUMENT, format!("subnet \"{subnet}\" has host bits set; did you mean \"{}/{prefix}\"?", ipv4(net & !(size - 1))));
        }
        let mut gw = net + 1;
        if let Some(g) = cfg.get("gateway") {
            let text = g.as_str().unwrap_or("");
            gw = match parse_ipv4(text) {
                Some(a) if a & !(size - 1) == net && a != net && a != net + size - 1 => a,
                _ => return fail(BERTH_INVALID_ARGUMENT, format!("gateway \"{text}\" is not a host address of {}/{prefix}", ipv4(net))),
            };
        }
        let np = NetPlug { host, net, prefix, size, gw, subnet: format!("{}/{prefix}", ipv4(net)), gateway: ipv4(gw) };

        // create() runs in a transaction: initialise the namespace, or refuse a changed subnet in use.
        match host.get("cfg/subnet")? {
            Some(old) if old == np.subnet => {}
            Some(old) => {
                let active = host.get_u32("active", 0)?;
                if active > 0 {
                    return fail(
                        BERTH_FAILED_PRECONDITION,
                        format!(
                            "this instance's state holds {active} addresses of subnet {old}, not {}: release them first \
                             (berth attachments gc) or give the new subnet a new instance name",
                            np.subnet
                        ),
                    );
                }
                while let Some(k) = host.next("free/", b"")? {
                    host.delete(&k)?;
                }
                host.delete(b"next")?;
                host.put("cfg/subnet", &np.subnet)?;
            }
            None => host.put("cfg/subnet", &np.subnet)?,
        }
        host.log(BERTH_LOG_INFO, &format!("rustnet serving {} ({} addresses, gateway {})", np.subnet, np.usable(), np.gateway));
        Ok(np)
    }

    fn usable(&self) -> u32 {
        self.size - 3 // network, broadcast, gateway
    }

    /// The add result: a pure function of the address, so a repeated add returns identical bytes.
    fn result(&self, a: u32) -> String {
        format!(
            "{{\"ips\":[{{\"address\":\"{}/{}\",\"gateway\":\"{}\",\"mac\":\"0a:58:{:02x}:{:02x}:{:02x}:{:02x}\"}}]}}",
            ipv4(a),
            self.prefix,
            self.gateway,
            a >> 24,
            (a >> 16) & 255,
            (a >> 8) & 255,
            a & 255
        )
    }

    fn event(&self, ty: &CStr, a: u32, k: &Key) -> Result<(), Error> {
        let json = format!("{{\"address\":\"{}\",\"containerID\":{},\"ifname\":{}}}", ipv4(a), quote(&k.cid), quote(&k.ifname));
        self.host.emit(ty, &json)
    }

    fn add(&self, req: &[u8]) -> Result<String, Error> {
        let obj = request(req)?;
        let k = Key::from(&obj)?;
        let h = self.host;
        let owner = k.owner();
        if let Some(hex) = h.get(&format!("att/{owner}"))? {
            return Ok(self.result(u32::from_str_radix(&hex, 16).unwrap_or(0))); // idempotent
        }
        let requested = obj.get("ips").and_then(Json::as_array).unwrap_or(&[]);
        if requested.len() > 1 {
            return fail(BERTH_INVALID_ARGUMENT, "ips: rustnet allocates one address per attachment; request at most one");
        }
        let addr = if let Some(r) = requested.first() {
            let text = r.as_str().unwrap_or("");
            let a = match parse_ipv4(text.split('/').next().unwrap_or("")) {
                Some(a) => a,
                None => return fail(BERTH_INVALID_ARGUMENT, "ips[0]: expected an IPv4 address such as \"10.77.0.9\""),
            };
            let off = a.wrapping_sub(self.net);
            if a & !(self.size - 1) != self.net || off == 0 || off == self.size - 1 || a == self.gw {
                let why = if a == self.gw { " (it is the gateway)" } else { "" };
                return fail(BERTH_INVALID_ARGUMENT, format!("requested address {text} is not an allocatable address of {}{why}", self.subnet));
            }
            if let Some(by) = h.get(&format!("ip/{a:08x}"))? {
                return fail(BERTH_ALREADY_EXISTS, format!("requested address {text} is in use by {by}"));
            }
            h.delete(format!("free/{a:08x}").as_bytes())?;
            a
        } else if let Some(key) = h.next("free/", b"")? {
            // 1. the smallest released address
            h.delete(&key)?;
            u32::from_str_radix(std::str::from_utf8(&key[5..]).unwrap_or("0"), 16).unwrap_or(0)
        } else {
            // 2. the next never-used offset, skipping the gateway and requested addresses
            let mut off = h.get_u32("next", 1)?;
            while off <= self.size - 2 && (self.net + off == self.gw || h.get(&format!("ip/{:08x}", self.net + off))?.is_some()) {
                off += 1;
            }
            if off > self.size - 2 {
                let active = h.get_u32("active", 0)?;
                return fail(
                    BERTH_RESOURCE_EXHAUSTED,
                    format!("no free address in {} ({active} of {} in use); release some (del, gc) or use a larger subnet", self.subnet, self.usable()),
                );
            }
            h.put("next", &(off + 1).to_string())?;
            self.net + off
        };
        h.put(&format!("ip/{addr:08x}"), &owner)?;
        h.put(&format!("att/{owner}"), &format!("{addr:08x}"))?;
        h.put("active", &(h.get_u32("active", 0)? + 1).to_string())?;
        self.event(c"address.allocated", addr, &k)?;
        Ok(self.result(addr))
    }

    /// Releases one attachment; unknown or half-finished ones are fine.
    fn release(&self, k: &Key) -> Result<bool, Error> {
        let h = self.host;
        let owner = k.owner();
        let Some(hex) = h.get(&format!("att/{owner}"))? else { return Ok(false) };
        let addr = u32::from_str_radix(&hex, 16).unwrap_or(0);
        h.delete(format!("att/{owner}").as_bytes())?;
        if h.get(&format!("ip/{addr:08x}"))?.as_deref() == Some(owner.as_str()) {
            h.delete(format!("ip/{addr:08x}").as_bytes())?;
            if addr.wrapping_sub(self.net) < h.get_u32("next", 1)? {
                h.put(&format!("free/{addr:08x}"), "")?;
            }
            h.put("active", &h.get_u32("active", 0)?.saturating_sub(1).to_string())?;
            self.event(c"address.released", addr, k)?;
        }
        Ok(true)
    }

    fn del(&self, req: &[u8]) -> Result<String, Error> {
        let k = Key::from(&request(req)?)?;
        self.release(&k)?;
        Ok(String::new())
    }

    fn check(&self, req: &[u8]) -> Result<String, Error> {
        let k = Key::from(&request(req)?)?;
        let owner = k.owner();
        let ok = match self.host.get(&format!("att/{owner}"))? {
            Some(hex) => self.host.get(&format!("ip/{hex}"))?.as_deref() == Some(owner.as_str()),
            None => false,
        };
        if !ok {
            return fail(BERTH_NOT_FOUND, format!("no reservation for container \"{}\" interface {}", k.cid, k.ifname));
        }
        Ok(String::new())
    }

    fn gc(&self, req: &[u8]) -> Result<String, Error> {
        let obj = request(req)?;
        let Some(valid) = obj.get("valid").and_then(Json::as_array) else {
            return fail(BERTH_INVALID_ARGUMENT, "valid is required: an array of {containerID, ifname}");
        };
        let mut keep = std::collections::BTreeSet::new();
        for (i, v) in valid.iter().enumerate() {
            if !matches!(v, Json::Obj(_)) {
                return fail(BERTH_INVALID_ARGUMENT, format!("valid[{i}]: expected an object {{containerID, ifname}}"));
            }
            keep.insert(Key::from(v)?.owner());
        }
        let mut after: Vec<u8> = Vec::new();
        let mut released = 0;
        while let Some(key) = self.host.next("att/", &after)? {
            after = key.clone();
            let owner = String::from_utf8_lossy(&key[4..]).into_owned();
            if keep.contains(&owner) {
                continue;
            }
            if let Some((ifname, cid)) = owner.split_once('/') {
                if self.release(&Key { cid: cid.into(), ifname: ifname.into() })? {
                    released += 1;
                }
            }
        }
        Ok(format!("{{\"released\":{released}}}"))
    }

    fn counts(&self) -> Result<(u32, u32), Error> {
        let active = self.host.get_u32("active", 0)?;
        Ok((active, self.usable().saturating_sub(active)))
    }

    fn status(&self, _req: &[u8]) -> Result<String, Error> {
        let (active, free) = self.counts()?;
        if free == 0 {
            return fail(BERTH_RESOURCE_EXHAUSTED, format!("no free address in {} (all {active} in use)", self.subnet));
        }
        Ok(format!("{{\"subnet\":\"{}\",\"active\":{active},\"free\":{free}}}", self.subnet))
    }

    fn capacity(&self, _req: &[u8]) -> Result<String, Error> {
        let (active, free) = self.counts()?;
        Ok(format!(
            "{{\"free\":{free},\"reserved\":0,\"active\":{active},\"pools\":[{{\"name\":\"default\",\"subnet\":\"{}\",\"free\":{free},\"reserved\":0,\"active\":{active}}}]}}",
            self.subnet
        ))
    }

    /// The generic call: "info", and "panic" to demonstrate that a panic never crosses the boundary.
    fn call(&self, method: &str, _req: &[u8]) -> Result<String, Error> {
        match method {
            "info" => Ok(format!("{{\"subnet\":\"{}\",\"gateway\":\"{}\"}}", self.subnet, self.gateway)),
            "panic" => panic!("deliberate panic requested through call(\"panic\")"),
            _ => fail(BERTH_UNIMPLEMENTED, format!("unknown method \"{method}\" (rustnet knows info and panic)")),
        }
    }
}

// ------------------------------------------------------------------------------------------------------
// The C boundary: every function is a thin shim through `guard`
// ------------------------------------------------------------------------------------------------------

unsafe fn plugin<'a>(instance: *mut c_void) -> &'a NetPlug {
    &*(instance as *const NetPlug)
}

unsafe extern "C" fn rn_create(
    host: *const HostServices,
    config: *const c_char,
    config_len: usize,
    instance_out: *mut *mut c_void,
    err: *mut c_char,
    cap: usize,
) -> Status {
    guard("create", std::ptr::null(), err, cap, || {
        if host.is_null() || instance_out.is_null() {
            return fail(BERTH_INVALID_ARGUMENT, "create: NULL host or instance_out");
        }
        let np = NetPlug::create(Host(host), bytes(config, config_len))?;
        *instance_out = Box::into_raw(Box::new(np)) as *mut c_void;
        Ok(String::new())
    })
}

unsafe extern "C" fn rn_destroy(instance: *mut c_void) {
    // destroy() cannot report an error; a panic in Drop is still caught so it cannot unwind into the host.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if !instance.is_null() {
            drop(Box::from_raw(instance as *mut NetPlug));
        }
    }));
}

macro_rules! json_op {
    ($name:ident, $method:ident) => {
        unsafe extern "C" fn $name(instance: *mut c_void, req: *const c_char, len: usize, out: *const Sink, err: *mut c_char, cap: usize) -> Status {
            guard(stringify!($method), out, err, cap, || plugin(instance).$method(bytes(req, len)))
        }
    };
}
json_op!(rn_add, add);
json_op!(rn_del, del);
json_op!(rn_check, check);
json_op!(rn_gc, gc);
json_op!(rn_status, status);
json_op!(rn_capacity, capacity);

unsafe extern "C" fn rn_call(
    instance: *mut c_void,
    method: *const c_char,
    req: *const c_char,
    len: usize,
    out: *const Sink,
    err: *mut c_char,
    cap: usize,
) -> Status {
    guard("call", out, err, cap, || {
        let m = if method.is_null() { "" } else { CStr::from_ptr(method).to_str().unwrap_or("") };
        plugin(instance).call(m, bytes(req, len))
    })
}

static NETWORK: Static<NetworkOps> = Static(NetworkOps {
    struct_size: std::mem::size_of::<NetworkOps>() as u32,
    add: Some(rn_add),
    del: Some(rn_del),
    check: Some(rn_check),
    gc: Some(rn_gc),
    status: Some(rn_status),
    capacity: Some(rn_capacity),
    admin: None,
});

const CONFIG_SCHEMA: &CStr = cr#"{"type":"object","additionalProperties":false,"required":["subnet"],"properties":{"subnet":{"type":"string","pattern":"^[0-9.]+/[0-9]+$","description":"IPv4 subnet, /8 to /30"},"gateway":{"type":"string","pattern":"^[0-9.]+$","description":"default: the subnet's first address"}}}"#;

static DESCRIPTOR: Static<Descriptor> = Static(Descriptor {
    struct_size: std::mem::size_of::<Descriptor>() as u32,
    abi_major: BERTH_ABI_MAJOR,
    abi_minor: BERTH_ABI_MINOR,
    name: c"rustnet".as_ptr(),
    version: c"1.0.0".as_ptr(),
    description: c"Example network plugin in Rust: IPv4 addresses from one subnet, state in the host kv".as_ptr(),
    kinds: BERTH_KIND_NETWORK,
    thread_contract: BERTH_THREADS_CONCURRENT, // immutable instance, all state in the host kv
    config_schema: CONFIG_SCHEMA.as_ptr(),
    create: Some(rn_create),
    destroy: Some(rn_destroy),
    reconfigure: None,
    network: &NETWORK.0,
    storage: std::ptr::null(),
    scheduler: std::ptr::null(),
    discovery: std::ptr::null(),
    call: Some(rn_call),
});

/// The one exported symbol. Must not allocate, start threads or call the host.
#[no_mangle]
pub extern "C" fn berth_plugin_entry_v1(host_major: u16, _host_minor: u16) -> *const Descriptor {
    if host_major != BERTH_ABI_MAJOR {
        return std::ptr::null();
    }
    &DESCRIPTOR.0
}
