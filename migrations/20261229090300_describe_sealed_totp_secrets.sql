-- Expand (no schema change). From this release on, admins.totp_secret holds
-- the secret sealed with AES-256-GCM under admin.totp_key, in the same
-- column, rather than the 20 plain bytes: see src/admin/totp_keys.rs. This
-- migration only records that on the column, for whoever reads the schema.
-- Existing plain secrets are sealed by the new release at the admin's next
-- sign-in with a code, or all at once by `newsletter admin reseal-totp`;
-- nothing here rewrites them, because the previous release cannot read a
-- sealed value.
-- Compatible with: the previous release, which reads and writes the column
-- as before. During a rolling update an old instance that meets a sealed
-- value takes it for a secret, so the codes it expects never match the
-- admin's app: it refuses the code (recovery codes still work) and never
-- lets anyone in without one; the column is never NULL for an admin who
-- enrolled. A secret an old instance enrols is stored plain, read by the
-- new release as such and sealed at the next sign-in.
COMMENT ON COLUMN admins.totp_secret IS
    'TOTP secret sealed with AES-256-GCM: "ts", format 1, key id, 12-byte nonce, ciphertext and tag; associated data names the admin. 20 plain bytes if stored before sealing and not used since.';
