/*
 * A reference for bench/fio-matrix.sh (MIRROR=1): the least a mirrored write can cost on this machine.
 *
 * An nbdkit filter that writes every request into a local file and then passes it to the plugin below it, nbdkit's
 * nbd plugin (reads are served from the local file), which sends it over one NBD connection on loopback to a second nbdkit serving a file (the other
 * replica). The write is acknowledged when both have it, as in Converge. It has none of Converge's other work: no
 * checksums, no metadata log, no allocation, no fencing. So Converge's ratio to it says how much its own machinery
 * costs; its ratio to plain `nbdkit file` says what mirroring over TCP costs at all.
 *
 * Built by fio-matrix.sh with: cc -O2 -fPIC -shared -o localcopy.so localcopy.c (needs nbdkit-plugin-dev).
 */
#define NBDKIT_API_VERSION 2
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <nbdkit-filter.h>

static const char *local_path;
static int local_fd = -1;

static int localcopy_config(nbdkit_next_config *next, nbdkit_backend *nxdata, const char *key, const char *value)
{
  if (strcmp(key, "localfile") == 0) {
    local_path = value;
    return 0;
  }
  return next(nxdata, key, value);
}

static int localcopy_get_ready(int thread_model)
{
  if (local_path == NULL) {
    nbdkit_error("localfile=PATH is required");
    return -1;
  }
  local_fd = open(local_path, O_RDWR);
  if (local_fd < 0) {
    nbdkit_error("open %s: %m", local_path);
    return -1;
  }
  return 0;
}

/* Reads come from the local copy, as a Converge coordinator reads from its own replica first. */
static int localcopy_pread(nbdkit_next *next, void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags,
                           int *err)
{
  char *p = buf;
  uint32_t left = count;
  uint64_t at = offset;
  while (left > 0) {
    ssize_t n = pread(local_fd, p, left, at);
    if (n <= 0) {
      *err = n < 0 ? errno : EIO;
      nbdkit_error("pread %s: %s", local_path, n < 0 ? strerror(errno) : "short file");
      return -1;
    }
    p += n;
    left -= n;
    at += n;
  }
  return 0;
}

static int localcopy_pwrite(nbdkit_next *next, void *handle, const void *buf, uint32_t count, uint64_t offset,
                            uint32_t flags, int *err)
{
  const char *p = buf;
  uint32_t left = count;
  uint64_t at = offset;
  while (left > 0) {
    ssize_t n = pwrite(local_fd, p, left, at);
    if (n < 0) {
      *err = errno;
      nbdkit_error("pwrite %s: %m", local_path);
      return -1;
    }
    p += n;
    left -= n;
    at += n;
  }
  if ((flags & NBDKIT_FLAG_FUA) && fdatasync(local_fd) < 0) {
    *err = errno;
    return -1;
  }
  return next->pwrite(next, buf, count, offset, flags, err);
}

static int localcopy_flush(nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  if (fdatasync(local_fd) < 0) {
    *err = errno;
    return -1;
  }
  return next->flush(next, flags, err);
}

static struct nbdkit_filter filter = {
  .name = "localcopy",
  .longname = "Converge bench reference: local copy beside the plugin's",
  .config = localcopy_config,
  .get_ready = localcopy_get_ready,
  .pread = localcopy_pread,
  .pwrite = localcopy_pwrite,
  .flush = localcopy_flush,
};

NBDKIT_REGISTER_FILTER(filter)
