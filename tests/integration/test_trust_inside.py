"""The sandbox CA stays trusted inside the sandbox after the image rebuilds its bundle."""

from __future__ import annotations

from sealbox import Sandbox, Secret

UNSET_CA_VARIABLES = "unset SSL_CERT_FILE CURL_CA_BUNDLE REQUESTS_CA_BUNDLE GIT_SSL_CAINFO; "


def test_ca_survives_update_ca_certificates(run, testworld):
    secret = Secret.env("ECHO_TOKEN", value="tok_" + "E" * 28, allow_hosts=["echo.test"])
    network = testworld.sandbox_network()

    async def scenario():
        async with await Sandbox.create("trust", network=network, secrets=[secret],
                                        upstream_ca=[str(testworld.ca.cert_path)]) as sandbox:
            before = await sandbox.shell(UNSET_CA_VARIABLES + "curl -sS -o /dev/null -w '%{http_code}' https://echo.test/")
            assert before.stdout_text == "200", before.stderr_text

            rebuilt = await sandbox.shell("update-ca-certificates --fresh >/dev/null 2>&1; echo $?")
            assert rebuilt.stdout_text == "0\n"

            after = await sandbox.shell(UNSET_CA_VARIABLES + "curl -sS -o /dev/null -w '%{http_code}' https://echo.test/")
            assert after.stdout_text == "200", after.stderr_text

            bundled = await sandbox.shell("grep -c 'BEGIN CERTIFICATE' /etc/sealbox/ca-bundle.crt")
            assert int(bundled.stdout_text) > 1

    run(scenario())


def test_sandbox_env_points_at_bundle(run, testworld):
    secret = Secret.env("ECHO_TOKEN", value="tok_" + "E" * 28, allow_hosts=["echo.test"])

    async def scenario():
        async with await Sandbox.create("trustenv", network=testworld.sandbox_network(),
                                        secrets=[secret], upstream_ca=[str(testworld.ca.cert_path)]) as sandbox:
            output = await sandbox.shell('echo "$SSL_CERT_FILE $GIT_SSL_CAINFO $PIP_CERT"')
            assert output.stdout_text.split() == ["/etc/sealbox/ca-bundle.crt"] * 3

    run(scenario())
