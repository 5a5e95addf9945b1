"""What framefarm asks of a camera's ONVIF services as a client (onvif-zeep-async): the RTSP URL of a profile."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from onvif import ONVIFCamera
from pydantic import Field

from ..config.schema import StrictModel
from ..config.types import Duration
from ..errors import SourceUnavailable

DEFAULT_PORT = 80
DEFAULT_TIMEOUT_S = 10.0


class OnvifCameraOptions(StrictModel):
    """A camera given by its ONVIF address instead of a stream URL."""

    host: str = Field(description="The camera's address.")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="Its ONVIF (HTTP) port.")
    user: str | None = Field(None, description="Login, for ONVIF and for the stream.")
    password: str | None = Field(None, description="Its password (from ${VAR} in practice).")
    profile: str | int = Field(0, description="The media profile: its token, or its place in GetProfiles (0: first).")
    timeout: Duration = Field(DEFAULT_TIMEOUT_S, gt=0, description="Longest wait for any one ONVIF call.")

    @property
    def address(self) -> str:
        return f"onvif://{self.host}:{self.port}"


def stream_url(camera: OnvifCameraOptions) -> str:
    """The profile's RTSP URL (GetProfiles, GetStreamUri), with the login put in it when the URL has none and
    names the camera's own host (never handed to another host a camera's answer names); SourceUnavailable, naming
    the camera, when it cannot be had or is not an RTSP URL."""
    try:
        uri = asyncio.run(_stream_uri(camera))
    except SourceUnavailable:
        raise
    except Exception as exc:  # zeep, aiohttp and onvif errors alike: the camera did not answer as asked
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise SourceUnavailable(f"{camera.address}: no stream URL: {reason}") from None
    parts = urlsplit(uri)
    if parts.scheme not in ("rtsp", "rtsps"):
        raise SourceUnavailable(f"{camera.address}: the stream URL it gave is not rtsp:// ({parts.scheme or 'none'})")
    if camera.user and not parts.username and parts.hostname == camera.host:
        login = quote(camera.user, safe="") + (f":{quote(camera.password, safe='')}" if camera.password else "")
        parts = parts._replace(netloc=f"{login}@{parts.netloc}")
    return urlunsplit(parts)


async def _stream_uri(options: OnvifCameraOptions) -> str:
    camera = ONVIFCamera(options.host, options.port, options.user, options.password)
    try:
        await asyncio.wait_for(camera.update_xaddrs(), options.timeout)
        media = await camera.create_media_service()
        profiles = await asyncio.wait_for(media.GetProfiles(), options.timeout)
        token = _token(profiles, options)
        setup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
        asked = media.GetStreamUri({"StreamSetup": setup, "ProfileToken": token})
        answer = await asyncio.wait_for(asked, options.timeout)
        return str(answer.Uri)
    finally:
        await camera.close()


def _token(profiles: list[Any], options: OnvifCameraOptions) -> str:
    tokens = [str(profile.token) for profile in profiles or []]
    if isinstance(options.profile, int):
        if options.profile >= len(tokens):
            raise SourceUnavailable(f"{options.address}: no profile {options.profile} (it has {len(tokens)})")
        return tokens[options.profile]
    if options.profile not in tokens:
        raise SourceUnavailable(f"{options.address}: no profile {options.profile!r} (it has {tokens})")
    return options.profile
