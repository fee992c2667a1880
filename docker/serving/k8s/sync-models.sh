#!/bin/sh
# Keeps /models, the volume TF Serving reads, in step with the model repository tfship publishes
# to in object storage (stock tensorflow/serving cannot read s3:// since 2.7,
# tensorflow/serving#1963). TF Serving loads any numeric version directory a config names and
# never checks it is complete, so each round:
#   1. reads models.config FIRST, into a temporary file: tfship writes a version's files before
#      the config that names it, so every version this config names is complete in the bucket;
#   2. copies each version not here yet to a staging directory, checks it against the bucket,
#      and renames it into place (versions are immutable: tfship refuses different files under
#      an existing number). A
#      version without saved_model.pb, which tfship copies last and deletes first, is being
#      published or removed and waits for the next round;
#   3. renames the config into place last; TF Serving applies it at its next
#      --model_config_file_poll_wait_seconds poll, on every replica;
#   4. removes versions gone from the bucket, unless the installed config still names them.
#
#   sync-models.sh [--once]     --once: one round, non-zero exit on failure (first sync)
#   MODEL_REPOSITORY            s3://bucket/prefix, tfship's serving.model_repository
#   SYNC_INTERVAL_SECONDS       pause between rounds (default 15)
#   RCLONE_CONFIG_MODELS_*      the rclone remote "models" (type s3, provider, region, endpoint,
#                               env_auth for AWS_* credentials or the pod's workload identity)
#   MODELS_DIR                  the shared volume (default /models)
set -eu

dst="${MODELS_DIR:-/models}"
interval="${SYNC_INTERVAL_SECONDS:-15}"
case "${MODEL_REPOSITORY:-}" in
  s3://?*) src="models:${MODEL_REPOSITORY#s3://}" ;;
  *)
    echo "sync-models: MODEL_REPOSITORY='${MODEL_REPOSITORY:-}' is not s3://bucket/prefix;" \
      "set it in the tfserving-sync ConfigMap (kustomization.yaml) to tfship's serving.model_repository" >&2
    exit 3 ;;
esac
src="${src%/}"
staging="$dst/.sync"

log() { echo "sync-models: $*"; }

# Directory names in a listing that are version numbers (tfship's own .tfship/ and
# .tfship-tmp-*/ prefixes are not, and TF Serving ignores them too).
numeric_dirs() { sed -n 's|^\([0-9][0-9]*\)/$|\1|p'; }

# "<model directory>:<version>" for every version a models.config names (the text format tfship
# writes: base_path, then model_version_policy { specific { versions: N ... } }).
configured_versions() {
  awk '/base_path:/ { n = split($2, parts, "/"); model = parts[n]; gsub(/"/, "", model) }
       /versions:/ { print model ":" $2 }' "$1"
}

# Every step checks its own exit status: `set -e` does not apply inside a function called from
# `||`, and a failed copy must never be renamed into place.
sync_round() {
  rm -rf "$staging" && mkdir -p "$staging" || return 1
  # rclone copyto exits 0 when the source does not exist: the file itself is the answer.
  if ! rclone copyto "$src/models.config" "$staging/models.config" || [ ! -s "$staging/models.config" ]; then
    log "cannot read $src/models.config (nothing deployed yet, or no access); retrying"
    return 1
  fi
  models="$(rclone lsf --dirs-only "$src")" || return 1
  for model in $(printf '%s\n' "$models" | sed -n 's|^\([^./][^/]*\)/$|\1|p'); do
    versions="$(rclone lsf --dirs-only "$src/$model")" || return 1
    for version in $(printf '%s\n' "$versions" | numeric_dirs); do
      [ -d "$dst/$model/$version" ] && continue
      files="$(rclone lsf --files-only "$src/$model/$version")" || return 1
      if ! printf '%s\n' "$files" | grep -qx 'saved_model.pb'; then
        log "$model/$version has no saved_model.pb yet (publish or removal in progress); skipped"
        continue
      fi
      rclone copy "$src/$model/$version" "$staging/$model-$version" || return 1
      # Same files, sizes and hashes as the bucket now: a version deleted (saved_model.pb first)
      # or changed while it was being copied is not renamed into place.
      if ! rclone check --quiet "$src/$model/$version" "$staging/$model-$version"; then
        log "$model/$version changed while it was copied; retrying next round"
        return 1
      fi
      mkdir -p "$dst/$model" && mv "$staging/$model-$version" "$dst/$model/$version" || return 1
      log "$model/$version copied"
    done
  done
  # The config goes live only when every version it names is here: a config read just before a
  # retention delete, or a hand edit, must not point TF Serving at a missing directory.
  for pair in $(configured_versions "$staging/models.config"); do
    if [ ! -d "$dst/${pair%:*}/${pair#*:}" ]; then
      log "models.config names ${pair%:*}/${pair#*:}, which is not here yet; keeping the current config"
      return 1
    fi
  done
  if ! cmp -s "$staging/models.config" "$dst/models.config"; then
    mv "$staging/models.config" "$dst/models.config" || return 1
    log "models.config updated"
  fi
  for model_dir in "$dst"/*/; do
    [ -d "$model_dir" ] || continue
    model="$(basename "$model_dir")"
    # A failed listing removes nothing.
    versions="$(rclone lsf --dirs-only "$src/$model" 2>/dev/null)" || continue
    for local_version in "$model_dir"*; do
      version="$(basename "$local_version")"
      case "$version" in *[!0-9]*) continue ;; esac
      grep -Eq "(versions|value): $version\$" "$dst/models.config" && continue
      printf '%s\n' "$versions" | numeric_dirs | grep -qx "$version" && continue
      rm -rf "$local_version" && log "$model/$version removed (gone from the repository)"
    done
  done
}

if [ "${1:-}" = "--once" ]; then
  sync_round
  exit $?
fi
while true; do
  sync_round || log "round failed; retrying in ${interval}s"
  sleep "$interval"
done
