#!/usr/bin/env bash
# Prints spec.yaml with the service's secrets added, for doctl to read:
#
#   scripts/do_spec.sh | doctl apps create --spec -
#   scripts/do_spec.sh | doctl apps update APP_ID --spec -
#
# The secrets come from a file kept outside the repository, NEWSLETTER_SECRETS
# (default ~/.config/newsletter/do-secrets.env), one KEY=VALUE a line:
#
#   APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN=…   (the Postmark server token)
#   APP_APPLICATION__HMAC_SECRET=…            (openssl rand -hex 32, set once)
#   APP_ADMIN__TOTP_KEY=…                     (openssl rand -base64 32; seals TOTP secrets)
#   APP_WEBHOOKS__POSTMARK_USERNAME=…
#   APP_WEBHOOKS__POSTMARK_PASSWORD=…
#
# and, only while a TOTP key rotation is under way (docs/deploying.md, "Rotating the
# TOTP key"), the keys it replaces, comma-separated:
#
#   APP_ADMIN__PREVIOUS_TOTP_KEYS=…
#
# Each goes into the shared `envs` list as `type: SECRET`: App Platform
# encrypts it on submission and never shows it again. Because `doctl apps
# update --spec` replaces the whole spec, every update must carry them; a
# committed placeholder would overwrite the real value each time, and a spec
# without them would delete them.
set -euo pipefail

cd "$(dirname "$0")/.."
secrets_file=${NEWSLETTER_SECRETS:-$HOME/.config/newsletter/do-secrets.env}
required=(
    APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN
    APP_APPLICATION__HMAC_SECRET
    APP_ADMIN__TOTP_KEY
    APP_WEBHOOKS__POSTMARK_USERNAME
    APP_WEBHOOKS__POSTMARK_PASSWORD
)
optional=(
    APP_ADMIN__PREVIOUS_TOTP_KEYS
)

if [[ ! -r $secrets_file ]]; then
    echo "No secrets file at $secrets_file (set NEWSLETTER_SECRETS); see docs/deploying.md." >&2
    exit 1
fi

# Only the secrets above: a misspelt name would be added unnoticed, and a
# name the spec already sets would override its binding. A line that is not
# KEY=VALUE is reported by number only, since it may be a pasted secret.
declare -A secrets=()
lineno=0
while IFS= read -r line || [[ -n $line ]]; do
    lineno=$((lineno + 1))
    [[ -z $line || $line == \#* ]] && continue
    key=${line%%=*}
    if [[ $line != *=* || ! $key =~ ^APP_[A-Z0-9_]+$ ]]; then
        echo "$secrets_file:$lineno: not a KEY=VALUE line with an APP_ name." >&2
        exit 1
    fi
    if [[ " ${required[*]} ${optional[*]} " != *" $key "* ]]; then
        echo "$secrets_file:$lineno: $key is not one of: ${required[*]} ${optional[*]}." >&2
        exit 1
    fi
    secrets[$key]=${line#*=}
done <"$secrets_file"

for key in "${required[@]}"; do
    if [[ -z ${secrets[$key]:-} ]]; then
        echo "$secrets_file: $key is missing or empty." >&2
        exit 1
    fi
done

# YAML double-quoted scalar: escape backslashes and quotes; control
# characters have no place in these values.
quote() {
    local value=$1
    if [[ $value =~ [[:cntrl:]] ]]; then
        echo "A secret holds a control character." >&2
        exit 1
    fi
    value=${value//\\/\\\\}
    value=${value//\"/\\\"}
    printf '"%s"' "$value"
}

entries=""
for key in $(printf '%s\n' "${!secrets[@]}" | sort); do
    entries+="      - key: $key"$'\n'
    entries+="        scope: RUN_TIME"$'\n'
    entries+="        type: SECRET"$'\n'
    entries+="        value: $(quote "${secrets[$key]}")"$'\n'
done

# Insert right after the anchored list's opening line: the migrate job's
# `envs: *app_envs` then carries them too.
anchor='    envs: &app_envs'
if [[ $(grep -cxF "$anchor" spec.yaml) != 1 ]]; then
    echo "spec.yaml has no single '$anchor' line to add the secrets to." >&2
    exit 1
fi
while IFS= read -r line || [[ -n $line ]]; do
    printf '%s\n' "$line"
    if [[ $line == "$anchor" ]]; then
        printf '%s' "$entries"
    fi
done <spec.yaml
