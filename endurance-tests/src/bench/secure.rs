//! Scenario `secure`: what security costs. Sealing content at rest against MD5, and TLS on
//! every link against the same federation in clear.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::client::{await_available, publish};
use super::transfer::single_hop;
use super::{amqp, link_rate, mb_s};
use crate::fedgen;

/// Scenario 1c: what security costs. The CPU time of sealing and opening content at rest
/// (AES-256-GCM, one core) against MD5 over the same bytes; then, on a federation whose every
/// link is TLS (and whose broker is TLS only), a single verifying pull against curl over TLS to
/// the same disk, and paced stream-through against store-and-forward.
pub(super) async fn secure(dir: &Path, quick: bool) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let gib: u64 = if quick { 1 } else { 4 };
    let scratch = dir.to_owned();
    let (seal, open, md5) =
        tokio::task::spawn_blocking(move || aes_gcm_cpu(&scratch, gib << 30)).await??;
    let per_gb = |d: Duration| d.as_secs_f64() * 1e9 / (gib << 30) as f64;
    println!(
        "AES-256-GCM on one core, {gib} GiB: seal {:.2} CPU-s per GB ({:.0} MB/s), open {:.2} \
         CPU-s per GB ({:.0} MB/s); MD5 over the same bytes {:.2} CPU-s per GB (ratio seal / MD5 {:.2})",
        per_gb(seal),
        mb_s(gib << 30, seal),
        per_gb(open),
        mb_s(gib << 30, open),
        per_gb(md5),
        seal.as_secs_f64() / md5.as_secs_f64()
    );

    let size: u64 = if quick { 256 << 20 } else { 1 << 30 };
    let shape = &topology::demo::SHAPE;
    let mut times = Vec::new();
    for stream_through in [true, false] {
        let mode = if stream_through {
            "stream-through"
        } else {
            "store-and-forward"
        };
        let rate = link_rate();
        let mut args = vec!["--pull-rate-limit", rate.as_str()];
        if !stream_through {
            args.push("--no-stream-through");
        }
        let b = fedgen::start_shape_as(&dir.join(mode), amqp(), &args, shape, true).await?;
        let (_, http) = b.tls_client()?;
        let token = b.fed.token().to_owned();
        let started = Instant::now();
        let p = publish(&http, &b.url("primary-a"), &token, "title=large", size, 1).await?;
        let published = started.elapsed();
        let id = p["id"].as_str().context("id")?;
        await_available(&http, &b.url("na"), id, Duration::from_secs(3600)).await?;
        let t = started.elapsed() - published;
        println!(
            "{mode:>17} over TLS (links paced at {rate}/s): {} MiB; publication -> verified at na {:.2} s",
            size >> 20,
            t.as_secs_f64()
        );
        times.push(t.as_secs_f64());
        let mut fed = b.fed;
        fed.shutdown().await?;
    }
    println!(
        "over TLS, ratio stream-through / store-and-forward paced: {:.2} (goal <= 0.45, as in clear)",
        times[0] / times[1]
    );

    // The single hop, unpaced, in clear and then over TLS: na pulls from eu (over mutual TLS,
    // the second time); curl downloads the same object from eu to the same disk (over TLS with
    // na's certificate, as pulls need a node's).
    let b = fedgen::start_shape_as(&dir.join("hop-clear"), amqp(), &[], shape, false).await?;
    let http = docfed_http::tls::client_builder().build()?;
    let clear = single_hop(&http, &b, b.fed.token(), dir, size, None).await;
    let mut fed = b.fed;
    fed.shutdown().await?;
    fed.discard();
    let clear = clear?;
    let b = fedgen::start_shape_as(&dir.join("hop"), amqp(), &[], shape, true).await?;
    let (ca, http) = b.tls_client()?;
    let certs = ca.parent().context("the CA's folder")?.to_owned();
    let identity = topology::certs::CertDir(certs).node(&b.id("na"));
    let over_tls = single_hop(&http, &b, b.fed.token(), dir, size, Some((&ca, identity))).await;
    let mut fed = b.fed;
    fed.shutdown().await?;
    let over_tls = over_tls?;
    println!(
        "single hop over TLS / in clear, same run: {:.2} (what TLS costs a pull)",
        over_tls / clear
    );
    Ok(())
}

/// CPU time (user + system, this thread) to seal `size` bytes, to open them again, and to MD5
/// them: the cost content at rest adds per byte. The sealed file is in memory (`/dev/shm` when
/// there is one, else `dir`), so that the figure is the cipher's rather than the disk's.
fn aes_gcm_cpu(dir: &Path, size: u64) -> Result<(Duration, Duration, Duration)> {
    use docfed_atrest::{ContentKey, Keys, Sealer};
    use std::io::Read;
    let key = ContentKey::from_hex(&"5a".repeat(32)).map_err(anyhow::Error::msg)?;
    let keys = Keys {
        current: key,
        old: Vec::new(),
    };
    let shm = Path::new("/dev/shm");
    let path = if shm.is_dir() { shm } else { dir }
        .join(format!("docfed-bench-sealed-{}.bin", std::process::id()));
    // Removes the (large) sealed file whatever happens below.
    struct Scratch<'a>(&'a Path);
    impl Drop for Scratch<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _scratch = Scratch(&path);
    let block = vec![0xa5u8; 1 << 20];
    let cpu = thread_cpu_time;
    let t0 = cpu()?;
    let mut sealer = Sealer::create(std::fs::File::create(&path)?, &keys.current)?;
    for _ in 0..size >> 20 {
        sealer.write_all(&block)?;
    }
    drop(sealer.finish()?);
    let seal = cpu()? - t0;
    let t0 = cpu()?;
    let (mut reader, len) = docfed_atrest::open_content(&path, Some(&keys))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let open = cpu()? - t0;
    if read != size || len != size {
        bail!("read back {read} of {size} bytes");
    }
    let t0 = cpu()?;
    let mut ctx = md5::Context::new();
    for _ in 0..size >> 20 {
        ctx.consume(&block);
    }
    let _ = ctx.finalize();
    Ok((seal, open, cpu()? - t0))
}

/// CPU time (user + system) the calling thread has used.
fn thread_cpu_time() -> Result<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_THREAD is Linux's, for this thread.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        bail!("getrusage: {}", std::io::Error::last_os_error());
    }
    // SAFETY: filled by the successful call above.
    let u = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(tv(u.ru_utime) + tv(u.ru_stime))
}
