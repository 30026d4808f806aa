//! IncrementalAlterConfigs (KIP-339), which rust-rdkafka 0.39 does not wrap: its
//! `AdminClient::alter_configs` is the legacy AlterConfigs, which resets every config the request
//! does not name. This calls librdkafka's `rd_kafka_IncrementalAlterConfigs` through the
//! `rdkafka::bindings` re-export of rdkafka-sys, on the admin client's own handle.
//!
//! Every native object is owned by a guard that destroys it, so an early return cannot leak.

use std::ffi::{c_char, CStr, CString};

use anyhow::{bail, Context};
use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;

use crate::client::TIMEOUT;

struct Resource(*mut rd::rd_kafka_ConfigResource_t);
impl Drop for Resource {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_ConfigResource_new and destroyed exactly once, here.
        unsafe { rd::rd_kafka_ConfigResource_destroy(self.0) }
    }
}

struct Queue(*mut rd::rd_kafka_queue_t);
impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new and destroyed exactly once, here.
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

struct Options(*mut rd::rd_kafka_AdminOptions_t);
impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_AdminOptions_new and destroyed exactly once, here.
        unsafe { rd::rd_kafka_AdminOptions_destroy(self.0) }
    }
}

struct Event(*mut rd::rd_kafka_event_t);
impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: returned non-null by rd_kafka_queue_poll; destroying it frees the result
        // objects borrowed from it, none of which outlive this guard.
        unsafe { rd::rd_kafka_event_destroy(self.0) }
    }
}

/// Copies a C string librdkafka owns (null-safe).
fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their owner, which
    // the caller keeps alive across this call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Sets `set` and deletes (resets to default) `delete` on one topic, leaving other configs alone.
pub fn incremental_alter_topic(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
) -> anyhow::Result<()> {
    let rk = admin.inner().native_ptr();
    let name = CString::new(topic).context("topic name contains NUL")?;
    // SAFETY: all pointers passed below are either guards created here or CStrings that outlive
    // the calls; librdkafka copies names and values into the resource.
    unsafe {
        let resource = Resource(rd::rd_kafka_ConfigResource_new(
            rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC,
            name.as_ptr(),
        ));
        let mut ops: Vec<(CString, rd::rd_kafka_AlterConfigOpType_t, Option<CString>)> = Vec::new();
        for (k, v) in set {
            ops.push((
                CString::new(k.as_str())?,
                rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET,
                Some(CString::new(v.as_str())?),
            ));
        }
        for k in delete {
            ops.push((
                CString::new(k.as_str())?,
                rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_DELETE,
                None,
            ));
        }
        for (k, op, v) in &ops {
            let v_ptr = v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
            let err = rd::rd_kafka_ConfigResource_add_incremental_config(
                resource.0,
                k.as_ptr(),
                *op,
                v_ptr,
            );
            if !err.is_null() {
                let msg = c_str(rd::rd_kafka_error_string(err));
                rd::rd_kafka_error_destroy(err);
                bail!("config {:?}: {msg}", k.to_string_lossy());
            }
        }

        let queue = Queue(rd::rd_kafka_queue_new(rk));
        let options = Options(rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS,
        ));
        let mut errstr = [0 as c_char; 512];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.0,
            TIMEOUT.as_millis() as i32,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let mut resources = [resource.0];
        rd::rd_kafka_IncrementalAlterConfigs(
            rk,
            resources.as_mut_ptr(),
            resources.len(),
            options.0,
            queue.0,
        );
        let ev = rd::rd_kafka_queue_poll(queue.0, 2 * TIMEOUT.as_millis() as i32);
        if ev.is_null() {
            bail!(
                "IncrementalAlterConfigs: no answer within {:?}",
                2 * TIMEOUT
            );
        }
        let ev = Event(ev);
        if rd::rd_kafka_event_error(ev.0) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!(
                "IncrementalAlterConfigs: {}",
                c_str(rd::rd_kafka_event_error_string(ev.0))
            );
        }
        let result = rd::rd_kafka_event_IncrementalAlterConfigs_result(ev.0);
        if result.is_null() {
            bail!("IncrementalAlterConfigs: unexpected event type");
        }
        let mut n = 0usize;
        let results = rd::rd_kafka_IncrementalAlterConfigs_result_resources(result, &mut n);
        for i in 0..n {
            let r = *results.add(i);
            if rd::rd_kafka_ConfigResource_error(r)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                bail!(
                    "cannot alter configs of topic {topic:?}: {}",
                    c_str(rd::rd_kafka_ConfigResource_error_string(r))
                );
            }
        }
    }
    Ok(())
}
