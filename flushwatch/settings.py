"""Settings: ``FLUSHWATCH_*`` environment variables (nested with ``__``) over an optional TOML file.

Precedence, highest first: explicit arguments, environment, the TOML file named by ``--config`` or
``FLUSHWATCH_CONFIG``, defaults. Invalid settings fail at start with a message naming the setting
(``SettingsError``).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from collectors.instruments import parse_universe
from detector.calendar import parse_session
from flushwatch.logs import MASK, redact


class SettingsError(ValueError):
    """Raised with a message that names the offending setting."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttTarget(_Section):
    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    """CA bundle that signed the broker's certificate (a private CA); unset: the system's trust store."""

    def tls_context(self) -> ssl.SSLContext | None:
        """The client's TLS context (``mqtts://``): the broker's certificate and host name are verified."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://[user:pass@]host:port`` (``mqtts://`` for TLS) into its parts."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"scheme must be mqtt:// or mqtts://, got {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("no host in the URL")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise ValueError("bad port in the URL") from exc
    return MqttTarget(
        host=parts.hostname,
        port=port,
        username=parts.username,
        password=SecretStr(parts.password) if parts.password else None,
        tls=parts.scheme == "mqtts",
    )


class BinanceSettings(_Section):
    """Binance USDⓈ-M futures. URLs follow the 2026 split: ``/market`` for trades, mark price and
    liquidations, ``/public`` for the order book; the legacy root URL handshakes but never pushes."""

    enabled: bool = True
    symbols: list[str] = Field(default_factory=list)
    """Symbols to watch instead of the universe's picks (``BTCUSDT``); empty = from ``universe``."""
    market_url: str = "wss://fstream.binance.com/market"
    public_url: str = "wss://fstream.binance.com/public"
    rest_url: str = "https://fapi.binance.com"
    liquidation_stream: str = Field(default="all", pattern="^(all|per_symbol)$")
    """``all`` subscribes ``!forceOrder@arr`` (every symbol, filtered locally); ``per_symbol`` subscribes
    ``<symbol>@forceOrder`` for the watchlist only."""
    streams_per_connection: int = Field(default=200, ge=1, le=1024)
    max_instruments: int = Field(default=100, ge=1, le=1000)
    """Most symbols watched at once; a universe that picks more is cut (``top:N`` keeps its largest), the rest
    counted in ``flushwatch_universe_refused_instruments{venue}`` and logged."""
    oi_poll_interval_s: float = Field(default=10.0, gt=0)
    """Target interval between two open-interest polls of one symbol; stretched when the used weight
    approaches ``oi_weight_budget``."""
    oi_weight_budget: int = Field(default=1200, ge=10)
    """Request weight per minute the poller may use (Binance allows 2400 per IP)."""
    max_frame_bytes: int = Field(default=1 << 20, ge=1024)
    stale_after_s: float = Field(default=30.0, gt=0)
    """A connection that delivered no message for this long is replaced (a retired URL never pushes)."""
    max_connection_age_s: float = Field(default=23.5 * 3600, gt=0)
    """Reconnect proactively before Binance's 24-hour limit."""
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)

    @field_validator("symbols")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [s.strip().upper() for s in value if s.strip()]


class VenueSettings(_Section):
    """One of the venues run by the generic collector (Bybit, OKX, Hyperliquid, Deribit, BitMEX). URLs left
    unset are the venue's public production endpoints (``collectors/<venue>/spec.py``)."""

    enabled: bool = False
    ws_url: str | None = None
    rest_url: str | None = None
    symbols: list[str] = Field(default_factory=list)
    """Venue symbols to watch instead of the universe's picks (``BTCUSDT``, ``BTC-USDT-SWAP``, ``XBTUSD``)."""
    max_instruments: int = Field(default=100, ge=1, le=1000)
    """Most instruments subscribed at once; a universe that picks more is cut (``top:N`` keeps its largest),
    the rest counted in ``flushwatch_universe_refused_instruments{venue}`` and logged."""
    max_frame_bytes: int = Field(default=4 << 20, ge=1024)
    stale_after_s: float = Field(default=30.0, gt=0)
    max_connection_age_s: float = Field(default=12 * 3600, gt=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)

    @field_validator("ws_url")
    @classmethod
    def _websocket(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("ws", "wss"):
            raise ValueError("must start with ws:// or wss://")
        return value

    @field_validator("rest_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        return value


class UniverseSettings(_Section):
    """What to watch: assets by name, or the ``top:N`` assets found on the venues' REST APIs."""

    watch: str = "BTC,ETH,SOL"
    """Comma-separated assets (``BTC,ETH``; BitMEX's XBT is BTC) or ``top:N``."""
    rank_by: str = Field(default="open_interest", pattern="^(open_interest|volume)$")
    """What ``top:N`` ranks by: USD open interest or 24 h volume, summed over the enabled venues."""
    refresh_s: float = Field(default=3600.0, ge=60)
    """How often instrument metadata is fetched again and the universe re-ranked; a changed pick renews
    that venue's connections."""

    @field_validator("watch")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_universe(value)
        return value


class WriterSettings(_Section):
    """The single Redis writer that drains the collectors' queue."""

    batch_max_events: int = Field(default=512, ge=1, le=10_000)
    flush_interval_ms: float = Field(default=5.0, gt=0)
    queue_max_events: int = Field(default=200_000, ge=100)
    """Bound of the in-memory queue between receive loops and the writer; beyond it events are dropped and
    counted (``flushwatch_writer_dropped_events_total{reason="queue_full"}``)."""
    buffer_max_events: int = Field(default=1_000_000, ge=100)
    """How many events the writer keeps while Redis is unreachable before it drops the oldest, counted."""
    retry_max_s: float = Field(default=5.0, gt=0)
    events_maxlen: int = Field(default=20_000, ge=100)
    """``MAXLEN ~`` of each events stream, in entries (each entry is a batch of up to ``batch_max_events``): the
    bound in a burst. Redis memory is at most about shards x maxlen x the bytes of an entry (~100 bytes per event,
    so ~40 KB for a full one)."""
    signals_maxlen: int = Field(default=20_000, ge=100)
    retention_s: float = Field(default=900.0, ge=1)
    """Entries older than this are trimmed from the events and signals streams (``XTRIM MINID ~``), which keeps
    Redis memory flat at a steady rate; a detector or alert process down for longer misses them."""


class DetectorSettings(_Section):
    """Thresholds of the first detector: policy as data. Times are event-time seconds."""

    eval_interval_s: float = Field(default=1.0, gt=0)
    state_interval_s: float = Field(default=5.0, gt=0)
    """How often each asset's snapshot (MQTT state, metrics) is refreshed; a stage change refreshes it at once."""
    read_count: int = Field(default=512, ge=1)
    block_ms: int = Field(default=100, ge=1, le=2000)
    baselines_save_s: float = Field(default=600.0, gt=0)
    """How often (wall clock) the hour-of-week baselines are saved to Redis; they are saved on shutdown too."""
    checkpoint_s: float = Field(default=10.0, gt=0)
    """How often (wall clock) a detector shard writes its whole state to Redis and acknowledges the entries it
    covers; after a crash the shard resumes from it and re-reads at most this much of the stream."""
    # liquidation intensity
    liq_fast_tau_s: float = Field(default=60.0, gt=0)
    liq_baseline_lag_min: int = Field(default=5, ge=1)
    """Minutes left out of the baseline before now, so a burst is never compared with itself."""
    liq_baseline_window_min: int = Field(default=360, ge=1)
    """Minutes averaged into the baseline (fewer while the asset's history is shorter)."""
    liq_baseline_min_minutes: int = Field(default=5, ge=1)
    """Lagged minutes the baseline must cover before liquidation intensity is judged at all: until then the
    ratio is unknown, so a restart cannot mistake an ordinary tape for a burst."""
    liq_floor_usd_min: float = Field(default=10_000.0, gt=0)
    liq_floor_oi_frac_min: float = Field(default=2e-6, ge=0)
    """The baseline is at least this share of open interest per minute (2e-6: $60k a minute at $30B), so a
    handful of liquidations in a quiet spell of a big market is not a burst."""
    proxy_trigger_ratio: float = Field(default=16.0, gt=1)
    """Where no liquidation was ever seen, taker flow against a side this many times its usual rate stands in
    for liquidations at the trigger (the other intensity thresholds scale with it)."""
    flow_base_tau_s: float = Field(default=21_600.0, gt=0)
    liq_trigger_ratio: float = Field(default=6.0, gt=1)
    trigger_hold_s: float = Field(default=10.0, ge=0)
    cascade_ratio: float = Field(default=10.0, gt=1)
    cascade_liq_share: float = Field(default=0.15, gt=0, le=1)
    cascade_oi_drop: float = Field(default=0.005, gt=0)
    exhaust_ratio: float = Field(default=2.0, gt=0)
    exhaust_hold_s: float = Field(default=60.0, ge=0)
    oi_purge: float = Field(default=0.05, gt=0)
    """Open interest down this fraction from the episode's start counts as purged."""
    funding_neutral_8h: float = 0.0001
    flush_min_signs: int = Field(default=2, ge=1, le=4)
    """Recovery signs (OI purged, funding reset, depth back, price retraced) an exhausted episode needs to be
    called flushed; with fewer it is reported as a pause with fuel remaining."""
    flush_depth_ratio: float = Field(default=0.7, gt=0)
    flush_retrace: float = Field(default=0.38, gt=0, le=1)
    flush_branching: float = Field(default=0.5, gt=0, le=1)
    flushed_hold_s: float = Field(default=300.0, ge=0)
    tradfi_sessions: tuple[str, ...] = ("America/New_York Mon-Fri 09:30-16:00",)
    """When traditional markets trade (``"<IANA zone> <days> <HH:MM>-<HH:MM>"``); outside every session the
    air-pocket depth threshold is ``air_depth_ratio_closed``. See ``detector.calendar``."""
    episode_timeout_s: float = Field(default=1800.0, gt=0)
    # shock
    shock_z1: float = Field(default=3.0, gt=0)
    shock_z5: float = Field(default=4.0, gt=0)
    shock_min_move: float = Field(default=0.003, ge=0)
    shock_imbalance: float = Field(default=0.2, ge=0, le=1)
    shock_timeout_s: float = Field(default=600.0, gt=0)
    # air pocket (stage 2)
    air_depth_ratio: float = Field(default=0.3, gt=0, le=1)
    """1 %-depth below this fraction of its 1-h median counts as withdrawn liquidity."""
    air_depth_ratio_closed: float = Field(default=0.45, gt=0, le=1)
    """The same while traditional markets are closed (the calendar): a thinner market is judged sooner."""
    air_spread_ratio: float = Field(default=3.0, gt=1)
    air_premium_bps: float = Field(default=5.0, gt=0)
    """Perp below index by this much (above, for shorts): perps leading the move."""
    air_hold_s: float = Field(default=10.0, ge=0)
    # liquidation clusters, thin book (stage 5), snowball (stage 6)
    sweep_trigger_share: float = Field(default=0.002, gt=0)
    """Estimated fuel swept in one sweep, as a share of open interest, that triggers stage 3 by itself."""
    thin_book_ratio: float = Field(default=0.5, gt=0)
    """Liquidations per minute over 1 %-depth at which forced orders eat the book (SBF's R, realised)."""
    thin_impact_ratio: float = Field(default=3.0, gt=1)
    impact_tau_s: float = Field(default=3600.0, gt=0)
    snowball_branching: float = Field(default=0.8, gt=0, lt=1)
    snowball_assets: int = Field(default=3, ge=2)
    hawkes_window_s: float = Field(default=300.0, gt=0)
    """Liquidation arrivals the branching ratio is fitted over: short enough that it falls within minutes of
    the burst (exhaustion needs it low), long enough for the 20 arrivals a fit needs in a cascade."""
    hawkes_refit_s: float = Field(default=5.0, gt=0)
    hawkes_beta_min: float = Field(default=0.02, gt=0)
    """Kernel decay bounds (1/s): consecutive large liquidations are seconds apart."""
    hawkes_beta_max: float = Field(default=2.0, gt=0)
    # liquidation-fuel map (an estimate)
    fuel_leverage: tuple[float, ...] = (2.0, 3.0, 5.0, 7.0, 10.0, 20.0, 50.0)
    fuel_leverage_weight: tuple[float, ...] = (0.18, 0.18, 0.30, 0.18, 0.08, 0.05, 0.03)
    """Share of new open interest at each leverage: measured on-chain positions are mostly below 10x
    (Hyperliquid, Dec 2025: 36 % at 0-3x, 48 % at 3-7x, 16 % above), not the 25-100x most heatmaps assume."""
    fuel_mmr: float = Field(default=0.005, ge=0, lt=0.5)
    fuel_half_life_s: float = Field(default=7 * 86400.0, gt=0)
    fuel_bucket_width: float = Field(default=0.0025, gt=0, lt=0.05)
    flow_tau_s: float = Field(default=60.0, gt=0)
    vol_halflife_s: float = Field(default=3600.0, gt=0)
    vol_floor_1m: float = Field(default=0.001, gt=0)
    price_fallback_s: float = Field(default=60.0, gt=0)
    """The mark stands in for the last price once no trade has been seen for this long (or ever)."""
    # overheating
    overheat_hot: float = Field(default=60.0, ge=0, le=100)
    overheat_exit: float = Field(default=50.0, ge=0, le=100)
    overheat_dwell_s: float = Field(default=300.0, ge=0)
    """The overheated flag keeps a new value at least this long (hysteresis in time as well as in level)."""
    funding_warm_8h: float = 0.0003
    """Funding (in the crowded side's favour) that scores 0.5 of the funding anchor."""
    funding_hot_8h: float = Field(default=0.0005, gt=0)
    """Funding that scores 0.8 of the funding anchor (it scores 0 at ``funding_neutral_8h``)."""
    funding_max_8h: float = 0.001
    """Funding that scores the whole funding anchor."""
    funding_pct_min_samples: int = Field(default=60, ge=1)
    """Per-minute funding samples (of at most 1440 kept) before the funding percentile counts."""
    premium_hot_bps: float = Field(default=10.0, gt=0)
    oi_build_full: float = Field(default=0.15, gt=0)
    weight_funding: float = Field(default=0.45, ge=0)
    weight_premium: float = Field(default=0.25, ge=0)
    weight_oi_build: float = Field(default=0.30, ge=0)
    fuel_depth_hot: float = Field(default=2.0, gt=0)
    """Estimated fuel within 2 % over 1 %-depth that scores the whole fuel component."""
    weight_fuel: float = Field(default=0.15, ge=0)
    weight_liquidity: float = Field(default=0.10, ge=0)
    """Fuel and liquidity count only where they are known (a depth feed, an OI history)."""

    @model_validator(mode="after")
    def _ordered(self) -> DetectorSettings:
        if self.exhaust_ratio >= self.liq_trigger_ratio:
            raise ValueError("exhaust_ratio must be below liq_trigger_ratio (hysteresis)")
        if self.cascade_ratio < self.liq_trigger_ratio:
            raise ValueError("cascade_ratio must not be below liq_trigger_ratio")
        if self.overheat_exit > self.overheat_hot:
            raise ValueError("overheat_exit must not exceed overheat_hot (hysteresis)")
        if len(self.fuel_leverage) != len(self.fuel_leverage_weight) or not self.fuel_leverage:
            raise ValueError("fuel_leverage and fuel_leverage_weight must have the same, non-zero length")
        if min(self.fuel_leverage) <= 1.0 or min(self.fuel_leverage_weight) < 0 or sum(self.fuel_leverage_weight) <= 0:
            raise ValueError("fuel_leverage must be above 1x and fuel_leverage_weight non-negative, not all zero")
        for session in self.tradfi_sessions:
            try:
                parse_session(session)
            except ValueError as exc:
                raise ValueError(f"tradfi_sessions: {exc}") from exc
        if self.hawkes_beta_min >= self.hawkes_beta_max:
            raise ValueError("hawkes_beta_min must be below hawkes_beta_max")
        if self.air_depth_ratio > self.air_depth_ratio_closed:
            raise ValueError("air_depth_ratio_closed must not be below air_depth_ratio (a closed market is thinner)")
        if self.liq_baseline_min_minutes > self.liq_baseline_window_min:
            raise ValueError("liq_baseline_min_minutes must not exceed liq_baseline_window_min")
        if self.liq_baseline_lag_min + self.liq_baseline_window_min > 1440:
            raise ValueError(
                "liq_baseline_lag_min + liq_baseline_window_min must not exceed 1440 (the per-minute ring, 24 h)"
            )
        if not self.funding_neutral_8h < self.funding_warm_8h < self.funding_hot_8h < self.funding_max_8h:
            raise ValueError(
                "funding anchors must rise: funding_neutral_8h < funding_warm_8h < funding_hot_8h < funding_max_8h"
            )
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLUSHWATCH_", env_nested_delimiter="__", extra="forbid", frozen=True
    )
    _toml_file: ClassVar[Path | None] = None

    redis_url: str | None = None
    """``redis://`` or ``rediss://``; unset starts a private redis-server."""
    mqtt_url: str | None = None
    """``mqtt://[user:pass@]host:port``; unset starts a private mosquitto if one is installed, else MQTT is off."""
    mqtt_ca_file: Path | None = None
    """For ``mqtts://`` to a broker whose certificate a private CA signed: that CA's PEM file."""
    mqtt_prefix: str = "flushwatch/v1"
    mqtt_client_id: str = "flushwatch"
    mqtt_queue_max: int = Field(default=10_000, ge=10)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    """0 disables the metrics server."""
    shards: int = Field(default=1, ge=1, le=1024)
    """Detector shards: an asset's events go to shard crc32(asset) % shards; every process must agree."""
    shutdown_grace_s: float = Field(default=25.0, gt=0)
    """Time a stopping process gives itself to flush, checkpoint, acknowledge and say offline (keep it under the
    orchestrator's: Docker's stop_grace_period, Kubernetes' terminationGracePeriodSeconds)."""
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    binance: BinanceSettings = Field(default_factory=BinanceSettings)
    universe: UniverseSettings = Field(default_factory=UniverseSettings)
    bybit: VenueSettings = Field(default_factory=VenueSettings)
    okx: VenueSettings = Field(default_factory=VenueSettings)
    hyperliquid: VenueSettings = Field(default_factory=VenueSettings)
    deribit: VenueSettings = Field(default_factory=VenueSettings)
    bitmex: VenueSettings = Field(default_factory=VenueSettings)
    writer: WriterSettings = Field(default_factory=WriterSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("mqtt_ca_file")
    @classmethod
    def _ca_file_readable(cls, value: Path | None) -> Path | None:
        if value is not None and not (value.is_file() and os.access(value, os.R_OK)):
            raise ValueError(f"{value} is not a readable file")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mqtt_url(value)
        return value

    @model_validator(mode="after")
    def _retention_covers_checkpoints(self) -> Settings:
        if self.writer.retention_s < 3 * self.detector.checkpoint_s:
            raise ValueError("writer.retention_s (FLUSHWATCH_WRITER__RETENTION_S) must be at least 3 x "
                             "detector.checkpoint_s: entries awaiting a checkpoint must not be trimmed away")
        return self

    @property
    def mqtt(self) -> MqttTarget | None:
        if not self.mqtt_url:
            return None
        return parse_mqtt_url(self.mqtt_url).model_copy(update={"ca_file": self.mqtt_ca_file})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, file_secret_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)


SECRET_MASK: Final = MASK


def shown(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data for ``flushwatch config show``: secret values masked, and the
    password of any URL (``mqtt://user:pass@host``, ``redis://:pass@host``) replaced by the mask."""
    return _masked(settings.model_dump(mode="python"))


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    if isinstance(value, SecretStr):
        return SECRET_MASK
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and "://" in value:
        return redact(value)
    return value


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        if not err["loc"]:  # a rule across sections: its message names the settings
            lines.append(err["msg"].removeprefix("Value error, "))
            continue
        name = ".".join(str(p) for p in err["loc"])
        env = "FLUSHWATCH_" + "__".join(str(p) for p in err["loc"]).upper()
        lines.append(f"setting {name} ({env}): {err['msg']}")
    return "; ".join(lines)


DEFAULT_SECRETS_DIR: Final = Path("/run/secrets")
"""Where Docker and Kubernetes mount secrets: a file ``flushwatch_mqtt_url`` there sets ``mqtt_url``."""


def secrets_dir() -> Path | None:
    """``FLUSHWATCH_SECRETS_DIR``, else ``/run/secrets`` when it exists: files named ``flushwatch_<setting>``
    (``flushwatch_redis_url``, ``flushwatch_mqtt_url``) hold settings that should not sit in the environment."""
    configured = os.environ.get("FLUSHWATCH_SECRETS_DIR")
    if configured:
        return Path(configured)
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Load settings (arguments, environment, secret files, TOML file, in that order of precedence), or raise
    ``SettingsError`` naming every invalid setting."""
    path = config or os.environ.get("FLUSHWATCH_CONFIG")
    toml = Path(path) if path else None
    if toml is not None and not toml.is_file():
        raise SettingsError(f"setting config (FLUSHWATCH_CONFIG): no such file {toml}")
    secrets = secrets_dir()
    if secrets is not None and not secrets.is_dir():
        raise SettingsError(f"setting secrets_dir (FLUSHWATCH_SECRETS_DIR): no such directory {secrets}")
    Settings._toml_file = toml
    try:
        return Settings(_secrets_dir=secrets, **overrides)  # type: ignore[call-arg]  # pydantic-settings' init option
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except Exception as exc:  # a TOML syntax error, for one
        raise SettingsError(f"setting config ({toml}): {exc}") from None
    finally:
        Settings._toml_file = None
