//go:build cgo

package av

/*
#cgo pkg-config: libavcodec libavutil libswresample
#include <errno.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <libavcodec/avcodec.h>
#include <libavutil/audio_fifo.h>
#include <libavutil/channel_layout.h>
#include <libavutil/dict.h>
#include <libavutil/error.h>
#include <libavutil/log.h>
#include <libavutil/mem.h>
#include <libavutil/samplefmt.h>
#include <libswresample/swresample.h>

enum {
	bav_eagain = AVERROR(EAGAIN),
	bav_eof = AVERROR_EOF,
};

// ---- decoder

typedef struct {
	AVCodecContext *ctx;
	AVPacket *pkt;
	AVFrame *frame;
} bdec;

static void bdec_free(bdec *d) {
	if (!d) return;
	avcodec_free_context(&d->ctx);
	av_packet_free(&d->pkt);
	av_frame_free(&d->frame);
	av_free(d);
}

static int bdec_open(bdec **out, int codec_id, const uint8_t *extra, int extra_len, int rate, int channels) {
	const AVCodec *c = avcodec_find_decoder((enum AVCodecID)codec_id);
	if (!c) return AVERROR_DECODER_NOT_FOUND;
	bdec *d = av_mallocz(sizeof(*d));
	if (!d) return AVERROR(ENOMEM);
	d->ctx = avcodec_alloc_context3(c);
	d->pkt = av_packet_alloc();
	d->frame = av_frame_alloc();
	if (!d->ctx || !d->pkt || !d->frame) {
		bdec_free(d);
		return AVERROR(ENOMEM);
	}
	d->ctx->sample_rate = rate;
	if (channels > 0) {
		av_channel_layout_uninit(&d->ctx->ch_layout);
		av_channel_layout_default(&d->ctx->ch_layout, channels);
	}
	d->ctx->pkt_timebase = (AVRational){1, rate};
	if (extra_len > 0) {
		d->ctx->extradata = av_mallocz(extra_len + AV_INPUT_BUFFER_PADDING_SIZE);
		if (!d->ctx->extradata) {
			bdec_free(d);
			return AVERROR(ENOMEM);
		}
		memcpy(d->ctx->extradata, extra, extra_len);
		d->ctx->extradata_size = extra_len;
	}
	int ret = avcodec_open2(d->ctx, c, NULL);
	if (ret < 0) {
		bdec_free(d);
		return ret;
	}
	*out = d;
	return 0;
}

static int bdec_send(bdec *d, const uint8_t *data, int len, int64_t pts) {
	int ret = av_new_packet(d->pkt, len);
	if (ret < 0) return ret;
	memcpy(d->pkt->data, data, len);
	d->pkt->pts = pts;
	d->pkt->dts = pts;
	ret = avcodec_send_packet(d->ctx, d->pkt);
	av_packet_unref(d->pkt);
	return ret;
}

// bdec_copy writes the decoded frame into out as interleaved float.
static int bdec_copy(const AVFrame *f, float *out) {
	int ch = f->ch_layout.nb_channels, n = f->nb_samples;
	int planar = av_sample_fmt_is_planar(f->format);
	for (int c = 0; c < ch; c++) {
		const uint8_t *src = planar ? f->extended_data[c] : f->extended_data[0];
		int step = planar ? 1 : ch, off = planar ? 0 : c;
		float *dst = out + c;
		switch (f->format) {
		case AV_SAMPLE_FMT_FLT:
		case AV_SAMPLE_FMT_FLTP:
			for (int i = 0; i < n; i++) dst[i*ch] = ((const float *)src)[i*step+off];
			break;
		case AV_SAMPLE_FMT_DBL:
		case AV_SAMPLE_FMT_DBLP:
			for (int i = 0; i < n; i++) dst[i*ch] = (float)((const double *)src)[i*step+off];
			break;
		case AV_SAMPLE_FMT_S16:
		case AV_SAMPLE_FMT_S16P:
			for (int i = 0; i < n; i++) dst[i*ch] = ((const int16_t *)src)[i*step+off] * (1.0f / 32768.0f);
			break;
		case AV_SAMPLE_FMT_S32:
		case AV_SAMPLE_FMT_S32P:
			for (int i = 0; i < n; i++) dst[i*ch] = (float)(((const int32_t *)src)[i*step+off] * (1.0 / 2147483648.0));
			break;
		case AV_SAMPLE_FMT_U8:
		case AV_SAMPLE_FMT_U8P:
			for (int i = 0; i < n; i++) dst[i*ch] = (((const uint8_t *)src)[i*step+off] - 128) * (1.0f / 128.0f);
			break;
		default:
			return AVERROR(ENOSYS);
		}
	}
	return 0;
}

// ---- encoder

typedef struct {
	AVCodecContext *ctx;
	AVFrame *frame;
	AVPacket *pkt;
	AVAudioFifo *fifo;
	SwrContext *swr;
	uint8_t **cvt;  // swresample output, in the encoder's format
	int cvt_cap;    // samples per channel cvt holds
	float *zeros;   // interleaved float silence for the input side
	int zeros_cap;  // samples per channel zeros holds
	int in_ch;
} benc;

static void benc_free_cvt(benc *e) {
	if (e->cvt) {
		av_freep(&e->cvt[0]);
		av_freep(&e->cvt);
	}
	e->cvt_cap = 0;
}

static void benc_free(benc *e) {
	if (!e) return;
	avcodec_free_context(&e->ctx);
	av_frame_free(&e->frame);
	av_packet_free(&e->pkt);
	if (e->fifo) av_audio_fifo_free(e->fifo);
	swr_free(&e->swr);
	benc_free_cvt(e);
	av_freep(&e->zeros);
	av_free(e);
}

static enum AVSampleFormat benc_pick_fmt(const AVCodecContext *ctx, const AVCodec *c) {
	const enum AVSampleFormat *fmts = NULL;
	int n = -1;
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(61, 13, 100)
	if (avcodec_get_supported_config(ctx, c, AV_CODEC_CONFIG_SAMPLE_FORMAT, 0, (const void **)&fmts, &n) < 0)
		fmts = NULL;
#else
	(void)ctx;
	fmts = c->sample_fmts;
#endif
	if (!fmts) return AV_SAMPLE_FMT_FLT;
	enum AVSampleFormat first = AV_SAMPLE_FMT_NONE;
	for (int i = 0; (n < 0 || i < n) && fmts[i] != AV_SAMPLE_FMT_NONE; i++) {
		if (fmts[i] == AV_SAMPLE_FMT_FLT || fmts[i] == AV_SAMPLE_FMT_FLTP) return fmts[i];
		if (first == AV_SAMPLE_FMT_NONE) first = fmts[i];
	}
	return first == AV_SAMPLE_FMT_NONE ? AV_SAMPLE_FMT_FLT : first;
}

static int benc_open(benc **out, const char *name, int rate, int channels, int64_t bitrate, int opus) {
	const AVCodec *c = avcodec_find_encoder_by_name(name);
	if (!c) return AVERROR_ENCODER_NOT_FOUND;
	benc *e = av_mallocz(sizeof(*e));
	if (!e) return AVERROR(ENOMEM);
	e->ctx = avcodec_alloc_context3(c);
	e->frame = av_frame_alloc();
	e->pkt = av_packet_alloc();
	if (!e->ctx || !e->frame || !e->pkt) {
		benc_free(e);
		return AVERROR(ENOMEM);
	}
	AVCodecContext *ctx = e->ctx;
	ctx->sample_fmt = benc_pick_fmt(ctx, c);
	ctx->sample_rate = rate;
	av_channel_layout_uninit(&ctx->ch_layout);
	av_channel_layout_default(&ctx->ch_layout, channels);
	ctx->bit_rate = bitrate;
	ctx->time_base = (AVRational){1, rate};
	ctx->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
	AVDictionary *opts = NULL;
	if (opus) av_dict_set(&opts, "frame_duration", "20", 0);
	int ret = avcodec_open2(ctx, c, &opts);
	av_dict_free(&opts);
	if (ret < 0) {
		benc_free(e);
		return ret;
	}
	if (ctx->frame_size <= 0) {
		benc_free(e);
		return AVERROR(ENOSYS);
	}
	e->fifo = av_audio_fifo_alloc(ctx->sample_fmt, ctx->ch_layout.nb_channels, 2 * ctx->frame_size);
	if (!e->fifo) {
		benc_free(e);
		return AVERROR(ENOMEM);
	}
	e->frame->format = ctx->sample_fmt;
	e->frame->sample_rate = ctx->sample_rate;
	e->frame->nb_samples = ctx->frame_size;
	ret = av_channel_layout_copy(&e->frame->ch_layout, &ctx->ch_layout);
	if (ret >= 0) ret = av_frame_get_buffer(e->frame, 0);
	if (ret < 0) {
		benc_free(e);
		return ret;
	}
	*out = e;
	return 0;
}

static int benc_small_last_frame(const benc *e) {
	return (e->ctx->codec->capabilities & AV_CODEC_CAP_SMALL_LAST_FRAME) != 0;
}

// benc_set_input (re)creates the resampler for interleaved float input at
// in_rate with in_ch channels.
static int benc_set_input(benc *e, int in_rate, int in_ch) {
	swr_free(&e->swr);
	AVChannelLayout in_layout;
	av_channel_layout_default(&in_layout, in_ch);
	int ret = swr_alloc_set_opts2(&e->swr,
		&e->ctx->ch_layout, e->ctx->sample_fmt, e->ctx->sample_rate,
		&in_layout, AV_SAMPLE_FMT_FLT, in_rate, 0, NULL);
	av_channel_layout_uninit(&in_layout);
	if (ret < 0) return ret;
	if (in_ch == 1 && e->ctx->ch_layout.nb_channels == 2) {
		// Mono to both channels at full level (swresample's default is
		// -3 dB per side).
		const double matrix[2] = {1.0, 1.0};
		ret = swr_set_matrix(e->swr, matrix, 1);
	}
	if (ret >= 0) ret = swr_init(e->swr);
	if (ret < 0) {
		swr_free(&e->swr);
		return ret;
	}
	if (in_ch != e->in_ch) {
		av_freep(&e->zeros);
		e->zeros_cap = 0;
	}
	e->in_ch = in_ch;
	return 0;
}

static int benc_ensure_cvt(benc *e, int samples) {
	if (samples <= e->cvt_cap) return 0;
	benc_free_cvt(e);
	int ret = av_samples_alloc_array_and_samples(&e->cvt, NULL, e->ctx->ch_layout.nb_channels, samples, e->ctx->sample_fmt, 0);
	if (ret < 0) {
		e->cvt = NULL;
		return ret;
	}
	e->cvt_cap = samples;
	return 0;
}

#define BENC_CHUNK 4096

// benc_push converts n input samples (pcm == NULL: silence) and appends them
// to the FIFO.
static int benc_push(benc *e, const float *pcm, int n) {
	if (!pcm && e->zeros_cap < BENC_CHUNK) {
		av_freep(&e->zeros);
		e->zeros = av_calloc((size_t)BENC_CHUNK * e->in_ch, sizeof(float));
		if (!e->zeros) return AVERROR(ENOMEM);
		e->zeros_cap = BENC_CHUNK;
	}
	while (n > 0) {
		int chunk = n > BENC_CHUNK ? BENC_CHUNK : n;
		const uint8_t *in[1] = { (const uint8_t *)(pcm ? pcm : e->zeros) };
		int ret = benc_ensure_cvt(e, swr_get_out_samples(e->swr, chunk));
		if (ret < 0) return ret;
		int got = swr_convert(e->swr, e->cvt, e->cvt_cap, in, chunk);
		if (got < 0) return got;
		if (got > 0 && av_audio_fifo_write(e->fifo, (void **)e->cvt, got) < got) return AVERROR(ENOMEM);
		n -= chunk;
		if (pcm) pcm += (size_t)chunk * e->in_ch;
	}
	return 0;
}

// benc_drain_swr moves what the resampler still holds into the FIFO.
static int benc_drain_swr(benc *e) {
	if (!e->swr) return 0;
	for (;;) {
		int ret = benc_ensure_cvt(e, swr_get_out_samples(e->swr, 0) + 64);
		if (ret < 0) return ret;
		int got = swr_convert(e->swr, e->cvt, e->cvt_cap, NULL, 0);
		if (got < 0) return got;
		if (got == 0) return 0;
		if (av_audio_fifo_write(e->fifo, (void **)e->cvt, got) < got) return AVERROR(ENOMEM);
	}
}

// benc_silence appends n samples of silence to the FIFO.
static int benc_silence(benc *e, int n) {
	int ret = benc_ensure_cvt(e, BENC_CHUNK);
	if (ret < 0) return ret;
	while (n > 0) {
		int chunk = n > BENC_CHUNK ? BENC_CHUNK : n;
		av_samples_set_silence(e->cvt, 0, chunk, e->ctx->ch_layout.nb_channels, e->ctx->sample_fmt);
		if (av_audio_fifo_write(e->fifo, (void **)e->cvt, chunk) < chunk) return AVERROR(ENOMEM);
		n -= chunk;
	}
	return 0;
}

// benc_send sends the next n FIFO samples to the encoder as one frame, or
// ends the stream when n == 0.
static int benc_send(benc *e, int n, int64_t pts) {
	if (n == 0) return avcodec_send_frame(e->ctx, NULL);
	e->frame->nb_samples = e->ctx->frame_size;
	int ret = av_frame_make_writable(e->frame);
	if (ret < 0) return ret;
	e->frame->nb_samples = n;
	if (av_audio_fifo_read(e->fifo, (void **)e->frame->extended_data, n) < n) return AVERROR_BUG;
	e->frame->pts = pts;
	return avcodec_send_frame(e->ctx, e->frame);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"
)

// Available reports whether FFmpeg is linked in.
func Available() bool { return true }

// SetLogLevel sets FFmpeg's process-wide log level (FFmpeg logs to stderr;
// its default is LogInfo, and a corrupt packet logs at LogError).
func SetLogLevel(l LogLevel) { C.av_log_set_level(C.int(l)) }

// avError turns an FFmpeg error code into "av: <op>: <av_strerror text>".
func avError(op string, code C.int) error {
	var buf [C.AV_ERROR_MAX_STRING_SIZE]C.char
	C.av_strerror(code, &buf[0], C.size_t(len(buf)))
	return fmt.Errorf("av: %s: %s", op, C.GoString(&buf[0]))
}

var (
	errDecoderClosed = errors.New("av: decoder is closed")
	errEncoderClosed = errors.New("av: encoder is closed")
	errFlushed       = errors.New("av: encoder was flushed")
)

// noPTS is AV_NOPTS_VALUE.
const noPTS = math.MinInt64

// Decoder decodes one AAC or Opus track into interleaved float32 PCM at the
// codec's own rate and channel count (no resampling). Not safe for
// concurrent use.
type Decoder struct {
	c       *C.bdec
	cleanup runtime.Cleanup
	codec   string
	rate    int // clock of Decode's pts argument
	// next is the PTS after the last frame (at nextRate), for frames the
	// decoder returns without one.
	next     int64
	nextRate int
}

// NewDecoder opens a decoder. codec is "aac" or "opus". extradata is the
// AudioSpecificConfig for AAC (nil: packets must carry ADTS headers) or the
// OpusHead for Opus (may be nil). sampleRate is the clock of Decode's pts
// argument and, when extradata is nil, the stream's rate; channels is needed
// only when extradata is nil. The extradata is copied.
func NewDecoder(codec string, extradata []byte, sampleRate, channels int) (*Decoder, error) {
	var id C.int
	switch codec {
	case "aac":
		id = C.AV_CODEC_ID_AAC
	case "opus":
		id = C.AV_CODEC_ID_OPUS
	default:
		return nil, fmt.Errorf("av: decoder: codec %q is not supported, expected \"aac\" or \"opus\"", codec)
	}
	if sampleRate <= 0 {
		return nil, fmt.Errorf("av: %s decoder: sample rate %d is not positive", codec, sampleRate)
	}
	if len(extradata) == 0 && channels <= 0 {
		return nil, fmt.Errorf("av: %s decoder: channels %d is not positive and there is no extradata", codec, channels)
	}
	var ex *C.uint8_t
	if len(extradata) > 0 {
		ex = (*C.uint8_t)(unsafe.Pointer(&extradata[0]))
	}
	var c *C.bdec
	if ret := C.bdec_open(&c, id, ex, C.int(len(extradata)), C.int(sampleRate), C.int(channels)); ret < 0 {
		return nil, avError("open "+codec+" decoder", ret)
	}
	d := &Decoder{c: c, codec: codec, rate: sampleRate, nextRate: sampleRate}
	d.cleanup = runtime.AddCleanup(d, func(c *C.bdec) { C.bdec_free(c) }, c)
	return d, nil
}

// Decode decodes one packet (a raw AAC frame, or an Opus packet) whose
// first sample is at pts (samples at the NewDecoder sample rate). It
// returns the frames the packet produced, usually one; they are the
// caller's. Frame.PTS counts samples at Frame.SampleRate (which differs
// from the NewDecoder rate only for HE-AAC, decoded at twice its core
// rate). An Opus decoder given an OpusHead drops the first pre-skip samples
// of the stream and advances that frame's PTS to match, so decoded
// timestamps line up with the encoder's input either way.
//
// A corrupt packet returns an error and the decoder stays usable for the
// next packet; frames decoded before an error are returned with it. pkt is
// only read during the call. An empty pkt returns nothing.
func (d *Decoder) Decode(pkt []byte, pts int64) ([]Frame, error) {
	if d.c == nil {
		return nil, errDecoderClosed
	}
	if len(pkt) == 0 {
		return nil, nil
	}
	defer runtime.KeepAlive(d)
	if ret := C.bdec_send(d.c, (*C.uint8_t)(unsafe.Pointer(&pkt[0])), C.int(len(pkt)), C.int64_t(pts)); ret < 0 {
		return nil, avError("decode "+d.codec, ret)
	}
	var frames []Frame
	for {
		f := d.c.frame
		ret := C.avcodec_receive_frame(d.c.ctx, f)
		if ret == C.bav_eagain || ret == C.bav_eof {
			return frames, nil
		}
		if ret < 0 {
			return frames, avError("decode "+d.codec, ret)
		}
		n, ch, rate := int(f.nb_samples), int(f.ch_layout.nb_channels), int(f.sample_rate)
		if n <= 0 || ch <= 0 || rate <= 0 {
			C.av_frame_unref(f)
			continue
		}
		pcm := make([]float32, n*ch)
		if ret := C.bdec_copy(f, (*C.float)(unsafe.Pointer(&pcm[0]))); ret < 0 {
			C.av_frame_unref(f)
			return frames, avError(fmt.Sprintf("decode %s: sample format %d", d.codec, int(f.format)), ret)
		}
		fpts := int64(f.pts)
		if fpts == noPTS {
			fpts = int64(f.best_effort_timestamp)
		}
		if fpts == noPTS {
			fpts = rescale(d.next, d.nextRate, rate)
		} else {
			fpts = rescale(fpts, d.rate, rate)
		}
		C.av_frame_unref(f)
		d.next, d.nextRate = fpts+int64(n), rate
		frames = append(frames, Frame{PCM: pcm, Samples: n, PTS: fpts, SampleRate: rate, Channels: ch})
	}
}

// Close frees the decoder. It is idempotent.
func (d *Decoder) Close() {
	if d.c == nil {
		return
	}
	d.cleanup.Stop()
	C.bdec_free(d.c)
	d.c = nil
}

// Encoder encodes interleaved float32 PCM into AAC-LC (FFmpeg's native
// encoder) or Opus (libopus, 20 ms frames) packets. Input of any rate and
// channel count is resampled/remixed with libswresample and buffered to
// whole codec frames. Not safe for concurrent use.
type Encoder struct {
	c         *C.benc
	cleanup   runtime.Cleanup
	name      string // FFmpeg encoder name, for errors
	rate      int
	channels  int
	frameSize int
	delay     int
	smallLast bool
	extradata []byte

	started bool
	flushed bool
	inRate  int
	inCh    int
	// nextIn is the input-clock PTS (at inRate) of the next input sample
	// the encoder consumes: the first input PTS plus everything fed since
	// (input, inserted silence, minus dropped overlap).
	nextIn int64
	// fifoPTS is the output PTS of the first sample in the FIFO.
	fifoPTS int64
	// sent counts frames sent to the codec.
	sent int64
	// restarts counts timeline restarts (see Restarts).
	restarts int
}

// NewEncoder opens an encoder. codec is "opus" (libopus; sampleRate 0 means
// 48000, the only rate WebRTC uses; 20 ms frames) or "aac" (AAC-LC;
// sampleRate 0 means 48000). channels is the output channel count (1 or 2).
// bitrate is in bit/s; 0 picks a default (Opus: libopus's, 96 kbit/s for
// stereo; AAC: 64 kbit/s per channel).
func NewEncoder(codec string, sampleRate, channels, bitrate int) (*Encoder, error) {
	var name string
	switch codec {
	case "opus":
		name = "libopus"
	case "aac":
		name = "aac"
		if bitrate == 0 {
			bitrate = 64000 * channels
		}
	default:
		return nil, fmt.Errorf("av: encoder: codec %q is not supported, expected \"aac\" or \"opus\"", codec)
	}
	if sampleRate == 0 {
		sampleRate = 48000
	}
	if sampleRate < 0 || channels <= 0 || bitrate < 0 {
		return nil, fmt.Errorf("av: %s encoder: bad parameters: rate %d, channels %d, bitrate %d", name, sampleRate, channels, bitrate)
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	opus := C.int(0)
	if codec == "opus" {
		opus = 1
	}
	var c *C.benc
	if ret := C.benc_open(&c, cname, C.int(sampleRate), C.int(channels), C.int64_t(bitrate), opus); ret < 0 {
		return nil, avError("open "+name+" encoder", ret)
	}
	e := &Encoder{
		c:         c,
		name:      name,
		rate:      int(c.ctx.sample_rate),
		channels:  int(c.ctx.ch_layout.nb_channels),
		frameSize: int(c.ctx.frame_size),
		delay:     int(c.ctx.initial_padding),
		smallLast: C.benc_small_last_frame(c) != 0,
	}
	if c.ctx.extradata_size > 0 {
		e.extradata = C.GoBytes(unsafe.Pointer(c.ctx.extradata), c.ctx.extradata_size)
	}
	e.cleanup = runtime.AddCleanup(e, func(c *C.benc) { C.benc_free(c) }, c)
	return e, nil
}

// Extradata returns the codec configuration: the AudioSpecificConfig for
// AAC, the OpusHead for Opus (its pre-skip equals Delay). The caller must
// not modify it.
func (e *Encoder) Extradata() []byte { return e.extradata }

// SampleRate returns the output sample rate: the clock of Packet.PTS.
func (e *Encoder) SampleRate() int { return e.rate }

// Channels returns the output channel count.
func (e *Encoder) Channels() int { return e.channels }

// FrameSize returns the samples per channel in each packet (960 for Opus
// at 48 kHz, 1024 for AAC).
func (e *Encoder) FrameSize() int { return e.frameSize }

// Delay returns the encoder's priming delay in samples at the output rate
// (FFmpeg's initial_padding: 312 for libopus at 48 kHz, 1024 for AAC). The
// decoded output starts with Delay samples that precede the first input
// sample; Packet.PTS already accounts for it (the first packet's PTS is the
// first input PTS minus Delay). A receiver that trims the priming (an Opus
// decoder honouring OpusHead pre-skip, an MP4 edit list) must place the
// first kept sample at the first input PTS.
func (e *Encoder) Delay() int { return e.delay }

// Encode consumes f (interleaved float32 at any rate and channel count; it
// is only read during the call) and returns the packets completed so far,
// in order. Samples are buffered to whole frames, so a call may return no
// packet or several.
//
// Packet timestamps follow f.PTS, not a sample counter. The encoder tracks
// where the next input sample is expected; when f.PTS differs from that:
//   - by at most 10 ms (timestamp jitter) it is ignored;
//   - a forward gap of up to 100 ms is filled with silence, so the audio
//     after the gap keeps its place and packets stay contiguous (a longer
//     fill would let a publisher multiply the packets, see maxGapFillMs);
//   - an overlap (backward step) of up to 1 s drops the overlapped input;
//   - a larger jump either way is a discontinuity, counted by Restarts: it
//     ends the current timeline (the partial frame
//     is padded with silence and encoded) and restarts it at f.PTS, aligned
//     so that the first packet holding the new audio has PTS exactly f.PTS
//     rescaled to the output rate (packets before it carry the old audio's
//     tail). Packet PTS then jumps, and goes backward for a backward jump.
//
// A change of f's rate or channel count is allowed at any time. Mono input
// to a stereo encoder goes to both channels at full level.
//
// An error about f itself leaves the Encoder as it was; after any other
// error the output may have lost audio and the Encoder should be closed.
func (e *Encoder) Encode(f Frame) ([]Packet, error) {
	if e.c == nil {
		return nil, errEncoderClosed
	}
	if e.flushed {
		return nil, errFlushed
	}
	if f.Samples < 0 || f.SampleRate <= 0 || f.Channels <= 0 || len(f.PCM) < f.Samples*f.Channels {
		return nil, fmt.Errorf("av: %s encoder: bad frame: %d samples, rate %d, %d channels, %d values",
			e.name, f.Samples, f.SampleRate, f.Channels, len(f.PCM))
	}
	if f.Samples == 0 {
		return nil, nil
	}
	defer runtime.KeepAlive(e)
	var out []Packet
	var err error
	switch {
	case !e.started:
		if err := e.setInput(f.SampleRate, f.Channels); err != nil {
			return nil, err
		}
		e.started = true
		e.nextIn = f.PTS
		e.fifoPTS = rescale(f.PTS, f.SampleRate, e.rate)
	case f.SampleRate != e.inRate || f.Channels != e.inCh:
		if ret := C.benc_drain_swr(e.c); ret < 0 {
			return nil, avError("resample for "+e.name, ret)
		}
		e.nextIn = rescale(e.nextIn, e.inRate, f.SampleRate)
		if err := e.setInput(f.SampleRate, f.Channels); err != nil {
			return nil, err
		}
	}

	pcm := f.PCM[:f.Samples*f.Channels]
	diff := f.PTS - e.nextIn
	tol := int64(e.inRate * syncToleranceMs / 1000)
	maxFill := int64(e.inRate * maxGapFillMs / 1000)
	maxOverlap := int64(e.inRate * maxOverlapMs / 1000)
	switch {
	case diff >= -tol && diff <= tol:
	case diff > 0 && diff <= maxFill:
		if ret := C.benc_push(e.c, nil, C.int(diff)); ret < 0 {
			return nil, avError("resample for "+e.name, ret)
		}
		e.nextIn += diff
	case diff < 0 && -diff <= maxOverlap:
		skip := int(-diff)
		if skip >= f.Samples {
			return nil, nil
		}
		pcm = pcm[skip*f.Channels:]
	default:
		if out, err = e.restart(f.PTS); err != nil {
			return out, err
		}
	}
	n := len(pcm) / f.Channels
	if ret := C.benc_push(e.c, (*C.float)(unsafe.Pointer(&pcm[0])), C.int(n)); ret < 0 {
		return out, avError("resample for "+e.name, ret)
	}
	e.nextIn += int64(n)
	return e.encodeFrames(out)
}

func (e *Encoder) setInput(rate, channels int) error {
	if ret := C.benc_set_input(e.c, C.int(rate), C.int(channels)); ret < 0 {
		return avError(fmt.Sprintf("resample %d Hz %d ch for %s", rate, channels, e.name), ret)
	}
	e.inRate, e.inCh = rate, channels
	return nil
}

// Restarts returns how many times Encode restarted the timeline at a
// timestamp jump too large to fill or trim (a discontinuity in the input).
func (e *Encoder) Restarts() int { return e.restarts }

// restart ends the current timeline and starts a new one at pts (input
// clock).
func (e *Encoder) restart(pts int64) ([]Packet, error) {
	e.restarts++
	if ret := C.benc_drain_swr(e.c); ret < 0 {
		return nil, avError("resample for "+e.name, ret)
	}
	if err := e.setInput(e.inRate, e.inCh); err != nil { // fresh resampler state
		return nil, err
	}
	if rem := int(C.av_audio_fifo_size(e.c.fifo)) % e.frameSize; rem != 0 {
		if ret := C.benc_silence(e.c, C.int(e.frameSize-rem)); ret < 0 {
			return nil, avError("encode "+e.name, ret)
		}
	}
	out, err := e.encodeFrames(nil)
	if err != nil {
		return out, err
	}
	// The codec assigns each packet the PTS of its first sample, taken from
	// the frame holding it, after a one-time shift by the priming delay, so
	// packet boundaries sit Delay samples before frame boundaries. Start the
	// new audio on a packet boundary by putting silence in front of it:
	// otherwise the packet straddling old and new audio would carry the new
	// audio's start at the old timeline's time.
	prefix := 0
	if e.sent > 0 {
		prefix = (e.frameSize - e.delay%e.frameSize) % e.frameSize
	}
	if ret := C.benc_silence(e.c, C.int(prefix)); ret < 0 {
		return out, avError("encode "+e.name, ret)
	}
	e.fifoPTS = rescale(pts, e.inRate, e.rate) - int64(prefix)
	e.nextIn = pts
	return out, nil
}

// encodeFrames encodes every whole frame in the FIFO.
func (e *Encoder) encodeFrames(out []Packet) ([]Packet, error) {
	var err error
	for err == nil && int(C.av_audio_fifo_size(e.c.fifo)) >= e.frameSize {
		out, err = e.send(out, e.frameSize)
	}
	return out, err
}

// send sends the next n FIFO samples (n == 0: end of stream) and collects
// the packets the codec has ready.
func (e *Encoder) send(out []Packet, n int) ([]Packet, error) {
	if ret := C.benc_send(e.c, C.int(n), C.int64_t(e.fifoPTS)); ret < 0 {
		return out, avError("encode "+e.name, ret)
	}
	e.fifoPTS += int64(n)
	e.sent++
	for {
		p := e.c.pkt
		ret := C.avcodec_receive_packet(e.c.ctx, p)
		if ret == C.bav_eagain || ret == C.bav_eof {
			return out, nil
		}
		if ret < 0 {
			return out, avError("encode "+e.name, ret)
		}
		out = append(out, Packet{
			Data:     C.GoBytes(unsafe.Pointer(p.data), p.size),
			PTS:      int64(p.pts),
			Duration: int(p.duration),
		})
		C.av_packet_unref(p)
	}
}

// Flush encodes everything still buffered (the last partial frame, and the
// codec's own look-ahead) and returns the remaining packets. It ends the
// stream: later Encode calls fail, later Flush calls return nothing.
func (e *Encoder) Flush() ([]Packet, error) {
	if e.c == nil {
		return nil, errEncoderClosed
	}
	if e.flushed {
		return nil, nil
	}
	defer runtime.KeepAlive(e)
	e.flushed = true
	var out []Packet
	var err error
	if e.started {
		if ret := C.benc_drain_swr(e.c); ret < 0 {
			return nil, avError("resample for "+e.name, ret)
		}
		if out, err = e.encodeFrames(nil); err != nil {
			return out, err
		}
		if rem := int(C.av_audio_fifo_size(e.c.fifo)); rem > 0 {
			if !e.smallLast {
				if ret := C.benc_silence(e.c, C.int(e.frameSize-rem)); ret < 0 {
					return out, avError("encode "+e.name, ret)
				}
				rem = e.frameSize
			}
			if out, err = e.send(out, rem); err != nil {
				return out, err
			}
		}
	}
	return e.send(out, 0)
}

// Close frees the encoder without flushing. It is idempotent.
func (e *Encoder) Close() {
	if e.c == nil {
		return
	}
	e.cleanup.Stop()
	C.benc_free(e.c)
	e.c = nil
}
